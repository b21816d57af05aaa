//! The strength floor for passphrase groups.
//!
//! A passphrase group's root secret is Argon2id(passphrase, salt from the name), and every
//! entry of the group is sealed under keys derived from it. So anyone holding a single entry
//! (a relay, a DHT node, a stolen backup) can test passphrase guesses offline, at the cost of
//! one Argon2id per guess and with no one to notice or rate-limit them. Argon2id makes each
//! guess slow; the floor makes sure there are enough guesses to make.

use crate::error::{CoveyError, Result};

/// The least zxcvbn score (0 to 4) a passphrase must reach to join a passphrase group.
///
/// zxcvbn estimates how many guesses an attacker who knows common passwords, words, names,
/// keyboard patterns, dates and the group's own name would need, and scores the estimate:
/// 0 below 10^3 guesses, 1 below 10^6, 2 below 10^8, 3 below 10^10, 4 beyond. Score 3 is
/// zxcvbn's "safely unguessable: moderate protection from an offline slow-hash attack", at
/// least about 10^8 guesses, and an offline slow-hash attack is exactly the threat here: an
/// entry lets anyone test guesses at one Argon2id (64 MiB, t = 3, p = 1) each. At roughly a
/// quarter of a second of one core per guess, 10^8 guesses are about a core-year, and the
/// 64 MiB each guess needs limits how much cheaper GPUs make them. Score 2 (10^6 to 10^8
/// guesses) is a few core-days to months, which a rented fleet finishes in hours; lower
/// scores fall to a laptop. Score 4 would be sound too, but refuses more of the short
/// phrases people can remember and type on every device; 3 is the score zxcvbn names for
/// this attack.
pub const MIN_PASSPHRASE_SCORE: u8 = 3;

/// Refuses a passphrase that scores below [`MIN_PASSPHRASE_SCORE`] for the group `name`.
///
/// The name counts as a known word: a passphrase made of the group's name is as weak as a
/// common password, since the name is what anyone probing the group knows first. zxcvbn
/// looks at the first 100 characters only. The error names the estimated guesses, the score
/// and zxcvbn's advice, never the passphrase.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an empty passphrase or one
/// below the floor.
pub fn check_passphrase_strength(passphrase: &str, name: &str) -> Result<()> {
    if passphrase.is_empty() {
        return Err(CoveyError::invalid("passphrase must not be empty"));
    }
    let estimate = zxcvbn::zxcvbn(passphrase, &[name]);
    let score = u8::from(estimate.score());
    if score >= MIN_PASSPHRASE_SCORE {
        return Ok(());
    }
    // The order of magnitude, rounded down: the message never overstates the estimate.
    let magnitude = estimate.guesses_log10().max(0.0).floor() as u32;
    let mut message = format!(
        "passphrase too weak to join a group with: about 10^{magnitude} guesses \
         (strength {score} of 4, at least {MIN_PASSPHRASE_SCORE} needed)"
    );
    if let Some(feedback) = estimate.feedback() {
        let advice: Vec<String> = feedback
            .warning()
            .map(|w| w.to_string())
            .into_iter()
            .chain(feedback.suggestions().iter().map(|s| s.to_string()))
            .collect();
        if !advice.is_empty() {
            message.push_str(": ");
            message.push_str(&advice.join(" "));
        }
    }
    Err(CoveyError::invalid(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// zxcvbn's score of `passphrase` with `name` as the only known word.
    fn score(passphrase: &str, name: &str) -> u8 {
        u8::from(zxcvbn::zxcvbn(passphrase, &[name]).score())
    }

    /// Checks `passphrase` for `name`, expecting a refusal, and returns the message.
    fn refused(passphrase: &str, name: &str) -> String {
        let err = check_passphrase_strength(passphrase, name).expect_err(passphrase);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        err.message().to_owned()
    }

    /// Like [`refused`], and the message does not repeat the passphrase (for passphrases
    /// that are not words of the message's own fixed text, as "password" is).
    fn refused_quietly(passphrase: &str, name: &str) -> String {
        let message = refused(passphrase, name);
        assert!(
            !message.contains(passphrase),
            "the message must not repeat the passphrase: {message}"
        );
        message
    }

    #[test]
    fn floor_is_zxcvbn_score_three() {
        assert_eq!(MIN_PASSPHRASE_SCORE, 3);
    }

    #[test]
    fn score_two_is_refused_and_score_three_accepted() {
        // Two words with a digit between: about 10^7 guesses, score 2, just under the floor.
        assert_eq!(score("tiger7window", "friends"), 2);
        let message = refused_quietly("tiger7window", "friends");
        assert!(
            message.starts_with("passphrase too weak to join a group with: about 10^7 guesses")
                && message.contains("(strength 2 of 4, at least 3 needed)")
                && message.contains("Add another word or two."),
            "{message}"
        );
        // The same two words with a space: about 10^8 guesses, score 3, just over it.
        assert_eq!(score("tiger window", "friends"), 3);
        check_passphrase_strength("tiger window", "friends").expect("score 3 is enough");

        // Random characters, where zxcvbn counts 10 guesses per character: 8 are 10^8
        // guesses, still score 2; one more crosses the floor.
        assert_eq!(score("qz7mw2kp", "friends"), 2);
        refused_quietly("qz7mw2kp", "friends");
        assert_eq!(score("qz7mw2kpx", "friends"), 3);
        check_passphrase_strength("qz7mw2kpx", "friends").expect("score 3 is enough");
    }

    #[test]
    fn common_passwords_are_refused_with_zxcvbn_advice() {
        assert_eq!(
            refused("password", "friends"),
            "passphrase too weak to join a group with: about 10^0 guesses (strength 0 of 4, \
             at least 3 needed): This is a top-10 common password. Add another word or two. \
             Uncommon words are better."
        );
        for weak in [
            "pw",
            "pass",
            "secret",
            "12345678",
            "qwertyuiop",
            "aaaaaaaaaaaa",
        ] {
            assert!(score(weak, "friends") < MIN_PASSPHRASE_SCORE, "{weak}");
            refused(weak, "friends");
        }
    }

    #[test]
    fn four_uncommon_words_pass() {
        for strong in [
            "correct horse battery staple",
            "quartz ember lattice vole",
            "marble kelp oboe thicket",
        ] {
            assert_eq!(score(strong, "friends"), 4, "{strong}");
            check_passphrase_strength(strong, "friends").expect(strong);
        }
    }

    #[test]
    fn the_group_name_counts_against_the_passphrase() {
        let name = "Kestrel Hollow Lantern Society";
        let passphrase = "kestrel hollow lantern society";
        // Strong alone: four words, score 4 to anyone who does not know the name...
        assert_eq!(u8::from(zxcvbn::zxcvbn(passphrase, &[]).score()), 4);
        check_passphrase_strength(passphrase, "friends").expect("strong for another group");
        // ...but it is the group's name, which everyone probing the group knows.
        assert!(score(passphrase, name) < MIN_PASSPHRASE_SCORE);
        let message = refused_quietly(passphrase, name);
        assert!(message.contains("at least 3 needed"), "{message}");
        // The name with a year on it is no better.
        assert_eq!(score("kestrel hollow lantern society 1987", name), 2);
        refused_quietly("kestrel hollow lantern society 1987", name);
    }

    #[test]
    fn empty_keeps_its_own_error() {
        let err = check_passphrase_strength("", "friends").expect_err("empty");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.message(), "passphrase must not be empty");
    }

    #[test]
    fn the_message_never_contains_the_passphrase() {
        // Even when the advice quotes a pattern (repeats, sequences, dates), it names the
        // pattern, not the passphrase.
        for weak in [
            "hunter2",
            "abcabcabcabc",
            "abcdefgh",
            "1987-05-04",
            "friends",
            "Friends2024!",
            "tr0mb0ne!",
            "zq",
        ] {
            refused_quietly(weak, "friends");
        }
    }
}
