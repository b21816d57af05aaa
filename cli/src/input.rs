//! Reading secrets and payloads from the terminal or stdin, with bounds, so neither a typo
//! nor a runaway pipe can do harm.

use std::io::{BufRead, IsTerminal, Read};

use covey_core::{CoveyError, Result};
use zeroize::Zeroizing;

/// Longest passphrase accepted, in bytes: far beyond any real one, and a bound on how much of
/// a mistaken pipe is read.
pub const MAX_PASSPHRASE_BYTES: usize = 4096;

/// Reads a passphrase for group `name`: from a no-echo prompt, typed twice, when stdin is a
/// terminal; otherwise from the first line of stdin. Never from the command line, so it does
/// not land in shell history or in `ps`.
pub fn passphrase(name: &str) -> Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        let first = prompt(&format!("passphrase for group {name:?}: "))?;
        let again = prompt("same passphrase again: ")?;
        if *first != *again {
            return Err(CoveyError::invalid(
                "the two passphrases differ; nothing was joined",
            ));
        }
        Ok(first)
    } else {
        first_line(std::io::stdin().lock(), MAX_PASSPHRASE_BYTES)
    }
}

/// One no-echo prompt on the controlling terminal.
fn prompt(text: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| CoveyError::invalid(format!("cannot read the passphrase: {e}")))
}

/// The first line of `reader` without its line ending, at most `max` bytes of UTF-8. An empty
/// stream gives an empty string (which `join_passphrase` refuses).
pub fn first_line(reader: impl BufRead, max: usize) -> Result<Zeroizing<String>> {
    // Allocated once at full size so no reallocation leaves a copy of the secret behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(max + 2));
    reader
        .take(max as u64 + 2)
        .read_until(b'\n', &mut buf)
        .map_err(|e| CoveyError::invalid(format!("cannot read the passphrase from stdin: {e}")))?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > max {
        return Err(CoveyError::invalid(format!(
            "the passphrase is longer than {max} bytes"
        )));
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| CoveyError::invalid("the passphrase is not valid UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// All of stdin as a payload, refusing more than `max` bytes.
pub fn payload_from_stdin(max: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CoveyError::invalid(format!("cannot read the payload from stdin: {e}")))?;
    if buf.len() > max {
        return Err(CoveyError::invalid(format!(
            "the payload on stdin is over the {max}-byte limit"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &[u8]) -> Result<String> {
        first_line(input, 16).map(|s| s.as_str().to_owned())
    }

    #[test]
    fn first_line_strips_only_the_line_ending() {
        assert_eq!(
            line(b"pass word\nsecond").ok().as_deref(),
            Some("pass word")
        );
        assert_eq!(line(b" padded \r\n").ok().as_deref(), Some(" padded "));
        assert_eq!(line(b"no newline").ok().as_deref(), Some("no newline"));
        assert_eq!(line(b"").ok().as_deref(), Some(""));
    }

    #[test]
    fn first_line_bounds_length_and_encoding() {
        assert!(line(b"0123456789abcdef\n").is_ok());
        assert!(line(b"0123456789abcdefg\n").is_err());
        assert!(line(&[b'x'; 10_000]).is_err());
        assert!(line(&[0xff, b'\n']).is_err());
    }
}
