//! What a damaged ledger looks like: `Damage`, the first thing wrong with a chain, and the
//! `Place` (segment and line) where it was found.

use std::path::PathBuf;

/// Where a problem is: segment file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub segment: PathBuf,
    pub line: usize,
    /// Byte offset and length of the line in its segment.
    pub offset: u64,
    pub length: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment.display(), self.line)
    }
}

/// What `verify` found wrong, at the first bad place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// A record's content no longer matches its hash.
    Edited { seq: u64, place: Place },
    /// A line that is not a ledger line at all.
    Unreadable { place: Place },
    /// Records absent from the sequence.
    Missing {
        expected: u64,
        found: u64,
        place: Place,
    },
    /// A record out of its place in the sequence.
    Reordered {
        expected: u64,
        found: u64,
        place: Place,
    },
    /// A record whose `prev` is not the hash of the record before it.
    BrokenLink { seq: u64, place: Place },
    /// The ledger ends before the last signed head, or mid-line.
    Truncated { detail: String },
    /// A checkpoint whose signature does not verify, or that names another head.
    BadCheckpoint {
        seq: u64,
        detail: String,
        place: Place,
    },
    /// Records after the last signed checkpoint: appended by someone without the key, or left
    /// by a crash in async mode.
    Unsigned {
        records: u64,
        first: u64,
        place: Place,
    },
    /// A head kept from earlier is not in the ledger: it was rolled back or replaced.
    NotTheExpectedHead {
        seq: u64,
        hash: String,
        found: Option<String>,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Edited { seq, place } => {
                write!(
                    f,
                    "{place}: record {seq} was edited: its content does not match its hash"
                )
            }
            Damage::Unreadable { place } => {
                write!(f, "{place}: not a ledger line (edited or corrupt)")
            }
            Damage::Missing {
                expected,
                found,
                place,
            } => write!(
                f,
                "{place}: record {expected} is missing (the next record present is {found})"
            ),
            Damage::Reordered {
                expected,
                found,
                place,
            } => write!(
                f,
                "{place}: records are reordered: found record {found} where {expected} belongs"
            ),
            Damage::BrokenLink { seq, place } => write!(
                f,
                "{place}: record {seq} does not follow from the record before it (prev hash differs)"
            ),
            Damage::Truncated { detail } => write!(f, "truncated: {detail}"),
            Damage::BadCheckpoint { seq, detail, place } => {
                write!(f, "{place}: checkpoint at record {seq}: {detail}")
            }
            Damage::Unsigned {
                records,
                first,
                place,
            } => write!(
                f,
                "{place}: {records} records from record {first} on are not covered by any \
                 signed checkpoint: not written by this ledger's key holder, or left by a crash \
                 in async mode (--allow-unsigned-tail accepts them)"
            ),
            Damage::NotTheExpectedHead { seq, hash, found } => match found {
                Some(found) => write!(
                    f,
                    "record {seq} has hash {found}, not the expected head {hash}: the ledger was \
                     replaced or rolled back"
                ),
                None => write!(
                    f,
                    "the ledger has no record {seq}, so not the expected head {seq}:{hash}: it \
                     was rolled back"
                ),
            },
        }
    }
}
