//! The shell's exit statuses: one number per meaning, the same for every command, listed under
//! `warrant --help` from here. A script can tell a deny from a damaged ledger from a typo from
//! a server that is down without reading the output.

use std::process::ExitCode;

/// Done; for `check` and `review attest`, allowed.
pub const DONE: u8 = 0;
/// An error the message names (a file that cannot be read, a call the server refused).
pub const ERROR: u8 = 1;
/// `check`, `check --explain`, `review attest`: the decision was a deny.
pub const DENIED: u8 = 2;
/// `log verify`: the ledger is intact, but its signatures were checked with the key found in
/// the folder under test, which whoever wrote the folder could have replaced.
pub const UNPINNED: u8 = 3;
/// `log verify`: the ledger is damaged or forged (the output names the first problem).
pub const DAMAGED: u8 = 4;
/// `health`: the server answered, but is not ready to decide (NOT_SERVING).
pub const NOT_SERVING: u8 = 5;
/// The command line is wrong: an unknown flag, a missing argument (sysexits' EX_USAGE).
pub const USAGE: u8 = 64;
/// The server could not be reached (sysexits' EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// Whoever read the output went away (a closed pipe): what a shell reports for SIGPIPE.
pub const CLOSED_PIPE: u8 = 141;

/// What `warrant --help` says about them.
pub const HELP: &str = "Exit status:
  0    done; for `check` and `review attest`, allowed
  1    an error (the message says which)
  2    denied (`check`, `review attest`)
  3    `log verify`: intact, but checked with the key found in the folder (unpinned)
  4    `log verify`: the ledger is damaged or forged
  5    `health`: the server answered, but is not ready to decide
  64   the command line is wrong (an unknown flag, a missing argument)
  69   the server could not be reached
  141  whoever read the output went away (a closed pipe)";

/// Allowed is [`DONE`], anything else [`DENIED`].
pub fn decision(allowed: bool) -> ExitCode {
    ExitCode::from(if allowed { DONE } else { DENIED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_every_status_once() {
        for status in [
            DONE,
            ERROR,
            DENIED,
            UNPINNED,
            DAMAGED,
            USAGE,
            UNAVAILABLE,
            CLOSED_PIPE,
        ] {
            let listed = HELP
                .lines()
                .filter(|line| line.trim_start().starts_with(&format!("{status} ")))
                .count();
            assert_eq!(listed, 1, "status {status}");
        }
    }
}
