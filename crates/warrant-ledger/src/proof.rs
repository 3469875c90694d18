//! One record's proof, for a person looking at one decision: its line hashes to what the chain
//! says, the chain runs unbroken from it to the first signed checkpoint after it, and that
//! checkpoint's signature verifies with the ledger's key. Reads forward from the record's place,
//! at most `MOST_LINES` lines, so it costs one checkpoint interval, not a scan of the ledger.

use ed25519_dalek::VerifyingKey;

use super::chain::{
    Checkpoint, Line, SegmentLines, chain_hash, verify_signature, written_entry_bytes,
};
use super::{LedgerError, Location};

/// The most lines read after a record looking for the checkpoint that signs it.
const MOST_LINES: usize = 100_000;

/// Where a record stands in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub seq: u64,
    /// The chain hash its line states (hex).
    pub hash: String,
    /// The segment file that holds it, and the byte its line starts at.
    pub segment: String,
    pub offset: u64,
    pub standing: Standing,
}

/// What checking the chain from a record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The checkpoint that signs it, and how many records after it that checkpoint also covers.
    Verified {
        checkpoint: Checkpoint,
        records_after: u64,
    },
    /// The chain from it is sound so far, but no checkpoint signs it yet (it is in the batch
    /// being written, or in an async ledger's unsigned tail).
    NotYetSigned,
    /// What is wrong: the record, the chain after it or the checkpoint was changed.
    DoesNotVerify(String),
}

/// Checks the record at `location` up to its checkpoint.
pub(super) fn prove(location: &Location, key: &VerifyingKey) -> Result<Proof, LedgerError> {
    let mut lines = SegmentLines::open(&location.segment, location.offset)?;
    let segment = location
        .segment
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut proof = Proof {
        seq: 0,
        hash: String::new(),
        segment,
        offset: location.offset,
        standing: Standing::NotYetSigned,
    };
    let Some((_, first)) = lines.next_line()? else {
        proof.standing = Standing::DoesNotVerify("its line is no longer where it was".into());
        return Ok(proof);
    };
    let (seq, mut head) = match entry_of(first) {
        Ok((seq, _, stated, computed)) => {
            proof.seq = seq;
            proof.hash = stated.clone();
            if stated != hex::encode(computed) {
                proof.standing = Standing::DoesNotVerify(format!(
                    "record {seq} was changed after it was written: it no longer hashes to \
                     the chain's {stated}"
                ));
                return Ok(proof);
            }
            (seq, computed)
        }
        Err(why) => {
            proof.standing = Standing::DoesNotVerify(why);
            return Ok(proof);
        }
    };
    let mut last = seq;
    for _ in 0..MOST_LINES {
        let Some((_, line)) = lines.next_line()? else {
            return Ok(proof);
        };
        if !line.ends_with(b"\n") {
            // A line being written.
            return Ok(proof);
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Checkpoint {
                checkpoint,
                signature,
            }) => {
                proof.standing = if checkpoint.seq != last || checkpoint.head != hex::encode(head) {
                    Standing::DoesNotVerify(format!(
                        "the checkpoint after record {last} does not name the chain's head there"
                    ))
                } else if let Err(why) = verify_signature(&checkpoint, &signature, key) {
                    Standing::DoesNotVerify(format!("the checkpoint at record {last}: {why}"))
                } else {
                    Standing::Verified {
                        records_after: checkpoint.seq - seq,
                        checkpoint,
                    }
                };
                return Ok(proof);
            }
            Ok(Line::Entry { .. }) => match entry_of(line) {
                Ok((next, prev, stated, computed)) => {
                    let broken = if next != last + 1 {
                        Some(format!("record {next} follows record {last}"))
                    } else if prev != hex::encode(head) {
                        Some(format!("the chain breaks at record {next}"))
                    } else if stated != hex::encode(computed) {
                        Some(format!("record {next} was changed after it was written"))
                    } else {
                        None
                    };
                    if let Some(why) = broken {
                        proof.standing = Standing::DoesNotVerify(why);
                        return Ok(proof);
                    }
                    head = computed;
                    last = next;
                }
                Err(why) => {
                    proof.standing = Standing::DoesNotVerify(why);
                    return Ok(proof);
                }
            },
            Err(_) => {
                proof.standing =
                    Standing::DoesNotVerify(format!("an unreadable line after record {last}"));
                return Ok(proof);
            }
        }
    }
    Ok(proof)
}

/// An entry's line: its sequence number, the previous hash it names, the hash it states and
/// the hash its bytes give.
fn entry_of(line: &[u8]) -> Result<(u64, String, String, [u8; 32]), String> {
    let Ok(Line::Entry { entry, prev, hash }) = serde_json::from_slice::<Line>(line) else {
        return Err("its line is not a record".into());
    };
    let prev_bytes = hex::decode(&prev)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("record {} names no previous hash", entry.seq))?;
    let bytes = written_entry_bytes(line)
        .ok_or_else(|| format!("record {} cannot be read back", entry.seq))?;
    Ok((entry.seq, prev, hash, chain_hash(&prev_bytes, &bytes)))
}
