//! Running a scenario over several seeds, and saying how to replay the one that failed.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Set to a seed (decimal or `0x` hex; several separated by commas) to run only those.
pub const SEED_ENV: &str = "COVEY_SIM_SEED";

/// Parses one seed, decimal or `0x`-prefixed hex.
pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The seeds to run: those in [`SEED_ENV`] when it is set (ignoring what does not parse),
/// `default` otherwise.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var(SEED_ENV) {
        Ok(v) => {
            let chosen: Vec<u64> = v.split(',').filter_map(parse_seed).collect();
            if chosen.is_empty() {
                default.to_vec()
            } else {
                chosen
            }
        }
        Err(_) => default.to_vec(),
    }
}

/// The command that replays `test` of test target `target` with `seed`.
pub fn replay_hint(target: &str, test: &str, seed: u64) -> String {
    format!(
        "{SEED_ENV}={seed} cargo test --release --offline -p covey-sim --test {target} {test} -- --nocapture"
    )
}

/// Runs `scenario` for every seed of [`seeds`]`(default)`, returning each result. When a seed
/// fails (an `Err` or a panic), panics naming the seed and the command that replays it.
pub fn run_seeds<T>(
    target: &str,
    test: &str,
    default: &[u64],
    scenario: impl Fn(u64) -> Result<T, String>,
) -> Vec<T> {
    run_each(target, test, &seeds(default), scenario)
}

/// Runs `scenario` for each of `seeds` (as [`run_seeds`], without looking at the
/// environment).
pub fn run_each<T>(
    target: &str,
    test: &str,
    seeds: &[u64],
    scenario: impl Fn(u64) -> Result<T, String>,
) -> Vec<T> {
    let mut out = Vec::new();
    for &seed in seeds {
        let result = catch_unwind(AssertUnwindSafe(|| scenario(seed)));
        let failure = match result {
            Ok(Ok(value)) => {
                out.push(value);
                continue;
            }
            Ok(Err(message)) => message,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string()),
        };
        panic!(
            "{test} failed with seed {seed}: {failure}\n  replay: {}",
            replay_hint(target, test, seed)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_both_bases() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2a "), Some(42));
        assert_eq!(parse_seed("nope"), None);
    }

    #[test]
    fn a_failing_seed_is_named_with_its_replay_command() {
        let caught = catch_unwind(|| {
            run_each("t", "case", &[5, 6], |seed| {
                if seed == 6 {
                    Err("boom".to_string())
                } else {
                    Ok(seed)
                }
            })
        });
        let panic = caught.expect_err("seed 6 fails");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("seed 6"), "{message}");
        assert!(message.contains("boom"), "{message}");
        assert!(message.contains("COVEY_SIM_SEED=6"), "{message}");
    }
}
