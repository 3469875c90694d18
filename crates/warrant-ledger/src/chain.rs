//! The chain on disk: entries and checkpoints as lines of segment files, their hashes and
//! signatures, the signing key, and reading a ledger back (`scan`, `verify`, `records`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::*;

/// The hashed part of an entry: its sequence number and one of a decision's record, a step of
/// an approval request or a search. (Ledgers from before approval requests hold only `record`,
/// and from before searches no `search`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) approval_request: Option<Box<ApprovalRequestRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) record: Option<Box<Record>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) search: Option<Box<SearchRecord>>,
    pub(super) seq: u64,
}

impl Entry {
    /// What it holds; `None` for an entry that holds none or more than one (which Warrant never
    /// writes).
    pub(super) fn recorded(self) -> Option<Recorded> {
        match (self.record, self.approval_request, self.search) {
            (Some(record), None, None) => Some(Recorded::Decision(record)),
            (None, Some(request), None) => Some(Recorded::ApprovalRequest(request)),
            (None, None, Some(search)) => Some(Recorded::Search(search)),
            _ => None,
        }
    }
}

/// A line of a segment file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum Line {
    Entry {
        entry: Box<Entry>,
        prev: String,
        hash: String,
    },
    Checkpoint {
        checkpoint: Checkpoint,
        signature: String,
    },
}

/// A signed statement: the chain up to `seq` has head hash `head`. Its fields are declared in
/// sorted order, so serde_json writes its canonical JSON (see `checkpoint_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Written with a durable batch, in the same write: every record before it was
    /// acknowledged only once this signature was on disk, so records after the last such
    /// checkpoint were never acknowledged (or were not written by Warrant).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch: bool,
    pub head: String,
    pub key_id: String,
    /// The replica that wrote this chain, in a fleet (each keeps its own). (Absent for a
    /// ledger written before replicas.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub seq: u64,
    pub time: String,
}

/// A checkpoint with its signature, as the head file and `GetHead` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub checkpoint: Checkpoint,
    pub signature: String,
}

/// The canonical JSON of a line's `entry` as it stands in the file, which is what was hashed.
/// (Not the typed `Entry` serialised again: a field added to records since the line was written
/// would change that, and every older ledger would read as edited.)
pub(super) fn written_entry_bytes(line: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let mut bytes = Vec::new();
    super::record::canonical_value(value.get("entry")?, &mut bytes).ok()?;
    Some(bytes)
}

/// What a checkpoint's signature signs: its RFC 8785 canonical JSON. The fields are sorted and
/// hold strings, a bool and an integer within 2^53 (a sequence number), for which serde_json's
/// bytes are RFC 8785's (a test holds them to `serde_json_canonicalizer`); once per group
/// commit, on the writer thread.
#[expect(
    clippy::expect_used,
    reason = "strings, a bool and an integer always serialise"
)]
pub(super) fn checkpoint_bytes(checkpoint: &Checkpoint) -> Vec<u8> {
    serde_json::to_vec(checkpoint).expect("checkpoints serialise")
}

/// A checkpoint's line, as segments and the head file hold it: canonical JSON too
/// ("checkpoint" < "signature").
#[expect(clippy::expect_used, reason = "a string always serialises")]
pub(super) fn checkpoint_line(signed: &SignedHead) -> Vec<u8> {
    let mut bytes = b"{\"checkpoint\":".to_vec();
    bytes.extend_from_slice(&checkpoint_bytes(&signed.checkpoint));
    bytes.extend_from_slice(b",\"signature\":");
    serde_json::to_writer(&mut bytes, &signed.signature).expect("a string serialises");
    bytes.extend_from_slice(b"}\n");
    bytes
}

pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Loads the signing key, or creates one (mode 0600) if the file does not exist.
pub fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, LedgerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    LedgerError::Corrupt(format!(
                        "{}: not a hex Ed25519 secret key",
                        path.display()
                    ))
                })?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| LedgerError::Unavailable(format!("no randomness for a key: {e}")))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(io_error(path))?;
            file.write_all(hex::encode(secret).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_error(path))?;
            tracing::info!(path = %path.display(), "created the ledger signing key");
            Ok(SigningKey::from_bytes(&secret))
        }
        Err(error) => Err(LedgerError::Io {
            path: path.to_path_buf(),
            source: error,
        }),
    }
}

pub(super) fn segments(dir: &Path) -> Result<Vec<PathBuf>, LedgerError> {
    let mut found = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(listing) => {
            for entry in listing {
                let path = entry.map_err(io_error(dir))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with(SEGMENT_PREFIX) && name.ends_with(".jsonl") {
                    found.push(path);
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(dir)(error)),
    }
    found.sort();
    Ok(found)
}

/// A summary of a sound ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The first record's sequence number (above 1 once older records are archived).
    pub first: u64,
    pub records: u64,
    pub checkpoints: u64,
    /// Records after the last checkpoint (sound, but not yet signed).
    pub unsealed: u64,
    pub head: [u8; 32],
}

/// One record as a scan found it: what start-up and `verify` need, and the record itself only
/// when the scan was asked to keep records (so that reading a large segment costs little memory).
pub(super) struct Scanned {
    pub(super) seq: u64,
    /// The decision's id, for an entry that records one.
    pub(super) decision_id: Option<String>,
    pub(super) recorded: Option<Recorded>,
    /// The chain hash of this record.
    pub(super) hash: [u8; 32],
    pub(super) place: Place,
}

/// A line as the first pass of a scan keeps it: an entry with its hash already computed from
/// its own `prev` (the second pass checks that `prev` is the chain's head).
enum RawLine {
    Entry {
        seq: u64,
        decision_id: Option<String>,
        recorded: Option<Recorded>,
        prev: String,
        hash: String,
        computed: [u8; 32],
    },
    Checkpoint {
        checkpoint: Checkpoint,
        signature: String,
    },
}

/// A ledger read back: every entry, and where the last good byte of the last segment is.
pub(super) struct Scan {
    pub(super) entries: Vec<Scanned>,
    pub(super) checkpoints: u64,
    pub(super) last_checkpoint_seq: Option<u64>,
    /// Whether the last checkpoint was signed with a durable batch.
    pub(super) last_checkpoint_batch: bool,
    /// The last segment's path and the length of its sound prefix, if its end is torn.
    pub(super) torn_tail: Option<(PathBuf, u64)>,
    /// The last segment's path and where its preallocated zeros start, if it has any (a
    /// durable writer's live segment, or one it left when it stopped without closing).
    pub(super) padding: Option<(PathBuf, u64)>,
}

/// The first sequence number in a segment, from its name.
pub(super) fn first_seq(segment: &Path) -> Option<u64> {
    segment
        .file_name()?
        .to_str()?
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// Where a scan starts. Each checkpoint's signature was checked by the caller.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start<'a> {
    /// The first record, after the genesis hash.
    Genesis,
    /// Within the segments: from the one holding this checkpoint's record, trusting what comes
    /// before it there and checking that the chain passes through it (start-up from the head).
    Within(&'a Checkpoint),
    /// After this checkpoint, whose records are elsewhere (archived): the next record must
    /// follow from its head.
    After(&'a Checkpoint),
}

/// Reads and checks the segments in `dir` from `start` on. `key` checks checkpoint signatures;
/// a torn last line is reported in `Scan::torn_tail` (recovery cuts it; `verify` calls it
/// truncation).
pub(super) fn scan(
    dir: &Path,
    key: &VerifyingKey,
    start: Start<'_>,
    keep_records: bool,
) -> Result<Result<Scan, Damage>, LedgerError> {
    scan_segments(segments(dir)?, key, start, keep_records)
}

/// The same over a list of segments in chain order (a ledger joined with its archives).
pub(super) fn scan_segments(
    mut segments: Vec<PathBuf>,
    key: &VerifyingKey,
    start: Start<'_>,
    keep_records: bool,
) -> Result<Result<Scan, Damage>, LedgerError> {
    let (anchor, after) = match start {
        Start::Genesis => (None, None),
        Start::Within(checkpoint) => (Some(checkpoint), None),
        Start::After(checkpoint) => (None, Some(checkpoint)),
    };
    // The first segment that can hold the first record to check.
    let first_needed = anchor.map(|a| a.seq).or(after.map(|a| a.seq + 1));
    if let Some(first_needed) = first_needed {
        let from = segments
            .iter()
            .rposition(|s| first_seq(s).is_some_and(|first| first <= first_needed))
            .unwrap_or(0);
        segments.drain(..from);
    }
    let (raw, torn_tail, padding) = match read_lines(&segments, keep_records)? {
        Ok(read) => read,
        Err(damage) => return Ok(Err(damage)),
    };
    let present: std::collections::HashSet<u64> = raw
        .iter()
        .filter_map(|(line, _)| match line {
            RawLine::Entry { seq, .. } => Some(*seq),
            RawLine::Checkpoint { .. } => None,
        })
        .collect();
    let mut walk = Walk {
        entries: Vec::new(),
        head: GENESIS,
        expected: 1,
        checkpoints: 0,
        last_checkpoint_seq: None,
        last_checkpoint_batch: false,
        // With an anchor, the lines before its record are taken as they are (they were checked
        // when written, and `verify` checks them all); the anchor's record must hash to the
        // anchor's signed head.
        trusting: anchor.is_some(),
    };
    if let Some(after) = after {
        walk.head = hex::decode(&after.head)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .unwrap_or(GENESIS);
        walk.expected = after.seq + 1;
    }
    for (line, place) in raw {
        // After an archive's anchor, what precedes it (left by an archiving cut short) is not
        // part of this ledger.
        if let Some(after) = after {
            match &line {
                RawLine::Entry { seq, .. } if *seq <= after.seq => continue,
                RawLine::Checkpoint { checkpoint, .. } if checkpoint.seq <= after.seq => continue,
                _ => {}
            }
        }
        let step = match anchor {
            Some(anchor) if walk.trusting => walk.trusted(line, place, anchor),
            _ => walk.checked(line, place, &present, key),
        };
        if let Err(damage) = step {
            return Ok(Err(damage));
        }
    }
    if walk.trusting
        && let Some(anchor) = anchor
    {
        return Ok(Err(Damage::Truncated {
            detail: format!(
                "the signed head names record {} but the ledger ends before it",
                anchor.seq
            ),
        }));
    }
    Ok(Ok(Scan {
        entries: walk.entries,
        checkpoints: walk.checkpoints,
        last_checkpoint_seq: walk.last_checkpoint_seq,
        last_checkpoint_batch: walk.last_checkpoint_batch,
        torn_tail,
        padding,
    }))
}

/// A torn last line: the segment and the offset it starts at. (The same shape says where a
/// segment's preallocated zeros start.)
type TornTail = Option<(PathBuf, u64)>;

/// The first pass: every line of `segments` with its place (an entry's hash computed from its
/// own `prev`), and a torn last line of the last segment, if any.
#[expect(
    clippy::type_complexity,
    reason = "an I/O error, or damage, or the lines"
)]
fn read_lines(
    segments: &[PathBuf],
    keep_records: bool,
) -> Result<Result<(Vec<(RawLine, Place)>, TornTail, TornTail), Damage>, LedgerError> {
    // Each line and where it is.
    let mut raw: Vec<(RawLine, Place)> = Vec::new();
    let mut torn_tail = None;
    let mut padding = None;
    for (index, path) in segments.iter().enumerate() {
        let mut lines = SegmentLines::open(path, 0)?;
        let mut line_number = 0;
        while let Some((offset, buffer)) = lines.next_line()? {
            line_number += 1;
            let place = Place {
                segment: path.clone(),
                line: line_number,
                offset,
                length: buffer.len() as u64,
            };
            let complete = buffer.last() == Some(&b'\n');
            let is_last_segment = index + 1 == segments.len();
            match serde_json::from_slice::<Line>(buffer) {
                Ok(Line::Entry { entry, prev, hash }) if complete => {
                    let Some(hashed) = written_entry_bytes(buffer) else {
                        return Ok(Err(Damage::Unreadable { place }));
                    };
                    let prev_bytes = hex::decode(&prev)
                        .ok()
                        .and_then(|p| <[u8; 32]>::try_from(p).ok())
                        .unwrap_or(GENESIS);
                    let seq = entry.seq;
                    let Some(recorded) = entry.recorded() else {
                        return Ok(Err(Damage::Unreadable { place }));
                    };
                    let decision_id = match &recorded {
                        Recorded::Decision(record) => Some(record.decision_id.clone()),
                        Recorded::ApprovalRequest(_) | Recorded::Search(_) => None,
                    };
                    raw.push((
                        RawLine::Entry {
                            seq,
                            decision_id,
                            recorded: keep_records.then_some(recorded),
                            computed: chain_hash(&prev_bytes, &hashed),
                            prev,
                            hash,
                        },
                        place,
                    ));
                }
                Ok(Line::Checkpoint {
                    checkpoint,
                    signature,
                }) if complete => raw.push((
                    RawLine::Checkpoint {
                        checkpoint,
                        signature,
                    },
                    place,
                )),
                _ if !complete && is_last_segment => {
                    torn_tail = Some((path.clone(), offset));
                    break;
                }
                _ => return Ok(Err(Damage::Unreadable { place })),
            }
        }
        if index + 1 == segments.len() && torn_tail.is_none() {
            padding = lines.padding_at().map(|at| (path.clone(), at));
        }
    }

    Ok(Ok((raw, torn_tail, padding)))
}

/// The second pass as it goes: the chain's head, the record expected next, what was read.
struct Walk {
    entries: Vec<Scanned>,
    head: [u8; 32],
    expected: u64,
    checkpoints: u64,
    last_checkpoint_seq: Option<u64>,
    last_checkpoint_batch: bool,
    /// Before an anchor's record: lines are taken as they are.
    trusting: bool,
}

impl Walk {
    /// A line up to `anchor`'s record, taken as it is; the anchor's record must hash to its
    /// signed head.
    fn trusted(&mut self, line: RawLine, place: Place, anchor: &Checkpoint) -> Result<(), Damage> {
        match line {
            RawLine::Entry {
                seq,
                decision_id,
                recorded,
                hash,
                computed,
                ..
            } if seq <= anchor.seq => {
                if seq == anchor.seq {
                    if hex::encode(computed) != anchor.head || hash != anchor.head {
                        return Err(Damage::BadCheckpoint {
                            seq: anchor.seq,
                            detail: "the signed head does not match the chain".into(),
                            place,
                        });
                    }
                    self.trusting = false;
                }
                let stated = hex::decode(&hash)
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .unwrap_or(GENESIS);
                self.head = stated;
                self.expected = seq + 1;
                self.entries.push(Scanned {
                    seq,
                    decision_id,
                    recorded,
                    hash: stated,
                    place,
                });
                Ok(())
            }
            RawLine::Checkpoint { checkpoint, .. } if checkpoint.seq <= anchor.seq => {
                self.checkpoints += 1;
                self.last_checkpoint_seq = Some(checkpoint.seq);
                self.last_checkpoint_batch = checkpoint.batch;
                Ok(())
            }
            _ => Err(Damage::Truncated {
                detail: format!(
                    "the signed head names record {} but the ledger does not hold it where it \
                     should",
                    anchor.seq
                ),
            }),
        }
    }

    /// A line past the anchor (or every line, without one): it must continue the chain.
    fn checked(
        &mut self,
        line: RawLine,
        place: Place,
        present: &std::collections::HashSet<u64>,
        key: &VerifyingKey,
    ) -> Result<(), Damage> {
        match line {
            RawLine::Entry {
                seq,
                decision_id,
                recorded,
                prev,
                hash,
                computed,
            } => {
                let expected = self.expected;
                if seq != expected {
                    let found = seq;
                    return Err(if present.contains(&expected) {
                        Damage::Reordered {
                            expected,
                            found,
                            place,
                        }
                    } else {
                        Damage::Missing {
                            expected,
                            found,
                            place,
                        }
                    });
                }
                if prev != hex::encode(self.head) {
                    return Err(Damage::BrokenLink { seq, place });
                }
                if hash != hex::encode(computed) {
                    return Err(Damage::Edited { seq, place });
                }
                self.head = computed;
                self.expected += 1;
                self.entries.push(Scanned {
                    seq,
                    decision_id,
                    recorded,
                    hash: computed,
                    place,
                });
            }
            RawLine::Checkpoint {
                checkpoint,
                signature,
            } => {
                let bad = |detail: &str| Damage::BadCheckpoint {
                    seq: checkpoint.seq,
                    detail: detail.to_owned(),
                    place: place.clone(),
                };
                if checkpoint.seq != self.expected - 1 || checkpoint.head != hex::encode(self.head)
                {
                    return Err(bad("it does not name the chain's head at that point"));
                }
                if let Err(damage) = verify_signature(&checkpoint, &signature, key) {
                    return Err(bad(&damage));
                }
                self.checkpoints += 1;
                self.last_checkpoint_seq = Some(checkpoint.seq);
                self.last_checkpoint_batch = checkpoint.batch;
            }
        }
        Ok(())
    }
}

pub(super) fn verify_signature(
    checkpoint: &Checkpoint,
    signature: &str,
    key: &VerifyingKey,
) -> Result<(), String> {
    if checkpoint.key_id != key_id(key) {
        return Err(format!(
            "signed by key {}, not by this ledger's key {}",
            checkpoint.key_id,
            key_id(key)
        ));
    }
    let signature = hex::decode(signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or("the signature is not an Ed25519 signature")?;
    key.verify_strict(&checkpoint_bytes(checkpoint), &signature)
        .map_err(|_| "bad signature".to_owned())
}

/// What `verify` checks beyond the chain itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Archive folders (oldest first) to verify joined with the ledger, as one chain.
    pub archives: Vec<PathBuf>,
    /// A head kept from earlier: the ledger must contain record `seq` with this chain hash.
    pub expect_head: Option<(u64, String)>,
    /// Accept records after the last checkpoint (async mode after a crash).
    pub allow_unsigned_tail: bool,
}

/// Checks the whole ledger in `dir`: chain, sequence, checkpoint signatures, that the head file
/// is there and the ledger reaches it, that no record lies after the last checkpoint, and that
/// an expected head is in it. `Ok(Err(damage))` names the first problem.
pub fn verify(
    dir: &Path,
    key: &VerifyingKey,
    options: &VerifyOptions,
) -> Result<Result<Verified, Damage>, LedgerError> {
    let anchor = match read_checkpoint_file(&dir.join(ANCHOR_FILE), key)? {
        Some(Ok(anchor)) => Some(anchor),
        Some(Err(detail)) => {
            return Ok(Err(Damage::BadCheckpoint {
                seq: 0,
                detail: format!("the archive anchor: {detail}"),
                place: head_place(dir),
            }));
        }
        None => None,
    };
    let mut joined = Vec::new();
    for archive in &options.archives {
        joined.extend(segments(archive)?);
    }
    joined.extend(segments(dir)?);
    // Joined with its archives, the chain starts where the oldest archive starts.
    let first_anchor = match options.archives.first() {
        Some(oldest) => match read_checkpoint_file(&oldest.join(ANCHOR_FILE), key)? {
            Some(Ok(anchor)) => Some(anchor),
            _ => None,
        },
        None => anchor,
    };
    let start = match &first_anchor {
        Some(anchor) => Start::After(&anchor.checkpoint),
        None => Start::Genesis,
    };
    let scan = match scan_segments(joined, key, start, false)? {
        Ok(scan) => scan,
        Err(damage) => return Ok(Err(damage)),
    };
    if let Some((segment, offset)) = &scan.torn_tail {
        return Ok(Err(Damage::Truncated {
            detail: format!(
                "{} ends mid-record after byte {offset} (a torn write)",
                segment.display()
            ),
        }));
    }
    let records = scan.entries.len() as u64;
    let last_seq = scan
        .entries
        .last()
        .map_or(first_anchor.as_ref().map_or(0, |a| a.checkpoint.seq), |e| {
            e.seq
        });
    let by_seq = |seq: u64| {
        let first = scan.entries.first()?.seq;
        scan.entries
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)
    };
    let head = read_head(dir, key)?;
    if head.is_none() && records > 0 {
        return Ok(Err(Damage::Truncated {
            detail: format!(
                "{} is missing: without the signed head, a ledger cut short cannot be told \
                 from a whole one",
                dir.join(HEAD_FILE).display()
            ),
        }));
    }
    if let Some(head) = head {
        match head {
            Err(detail) => {
                return Ok(Err(Damage::BadCheckpoint {
                    seq: 0,
                    detail,
                    place: head_place(dir),
                }));
            }
            Ok(SignedHead { checkpoint, .. }) => {
                let at = by_seq(checkpoint.seq).map(|e| hex::encode(e.hash));
                let at_anchor = first_anchor
                    .as_ref()
                    .filter(|a| a.checkpoint.seq == checkpoint.seq)
                    .map(|a| a.checkpoint.head.clone());
                if checkpoint.seq > last_seq {
                    return Ok(Err(Damage::Truncated {
                        detail: format!(
                            "the last signed checkpoint covers record {} but the ledger ends at record {last_seq}",
                            checkpoint.seq
                        ),
                    }));
                }
                if checkpoint.seq > 0 && at.or(at_anchor) != Some(checkpoint.head.clone()) {
                    return Ok(Err(Damage::BadCheckpoint {
                        seq: checkpoint.seq,
                        detail: "the signed head does not match the chain".into(),
                        place: head_place(dir),
                    }));
                }
            }
        }
    }
    let unsealed = last_seq
        - scan
            .last_checkpoint_seq
            .unwrap_or(first_anchor.as_ref().map_or(0, |a| a.checkpoint.seq))
            .min(last_seq);
    if unsealed > 0 && !options.allow_unsigned_tail {
        let first = &scan.entries[usize::try_from(records - unsealed).unwrap_or(usize::MAX)];
        return Ok(Err(Damage::Unsigned {
            records: unsealed,
            first: first.seq,
            place: first.place.clone(),
        }));
    }
    if let Some((seq, hash)) = &options.expect_head {
        let found = by_seq(*seq).map(|e| hex::encode(e.hash));
        if found.as_deref() != Some(hash.as_str()) {
            return Ok(Err(Damage::NotTheExpectedHead {
                seq: *seq,
                hash: hash.clone(),
                found,
            }));
        }
    }
    Ok(Ok(Verified {
        first: scan.entries.first().map_or(last_seq + 1, |e| e.seq),
        records,
        checkpoints: scan.checkpoints,
        unsealed,
        head: scan.entries.last().map_or(GENESIS, |e| e.hash),
    }))
}

pub(super) fn head_place(dir: &Path) -> Place {
    Place {
        segment: dir.join(HEAD_FILE),
        line: 1,
        offset: 0,
        length: 0,
    }
}

/// The last checkpoint, kept apart from the segments so a cut-off tail is noticed.
pub fn read_head(
    dir: &Path,
    key: &VerifyingKey,
) -> Result<Option<Result<SignedHead, String>>, LedgerError> {
    read_checkpoint_file(&dir.join(HEAD_FILE), key)
}

/// A file holding one signed checkpoint line (the head, or an archive anchor), its signature
/// checked.
pub(super) fn read_checkpoint_file(
    path: &Path,
    key: &VerifyingKey,
) -> Result<Option<Result<SignedHead, String>>, LedgerError> {
    let path = path.to_path_buf();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let Ok(Line::Checkpoint {
        checkpoint,
        signature,
    }) = serde_json::from_str::<Line>(&text)
    else {
        return Ok(Some(Err(format!("{} is not a checkpoint", path.display()))));
    };
    Ok(Some(verify_signature(&checkpoint, &signature, key).map(
        |()| SignedHead {
            checkpoint,
            signature,
        },
    )))
}

/// Every entry in the ledger, in order (for `warrant log show` and `search`).
pub fn records(dir: &Path, key: &VerifyingKey) -> Result<Vec<Recorded>, LedgerError> {
    let anchor = read_checkpoint_file(&dir.join(ANCHOR_FILE), key)?.and_then(Result::ok);
    let start = match &anchor {
        Some(anchor) => Start::After(&anchor.checkpoint),
        None => Start::Genesis,
    };
    match scan(dir, key, start, true)? {
        Ok(scan) => Ok(scan
            .entries
            .into_iter()
            .filter_map(|e| e.recorded)
            .collect()),
        Err(damage) => Err(LedgerError::Corrupt(format!(
            "the ledger does not verify ({damage}); run `warrant log verify`"
        ))),
    }
}

/// A segment's lines from a byte offset, each with the offset it starts at. The last line may
/// lack its newline (a line being written, or a torn tail): callers tell by its last byte.
///
/// A durable ledger's live segment is preallocated with zeros ahead of what is written (so that
/// each batch's fdatasync overwrites blocks the file already has, instead of growing it), and
/// canonical JSON never holds a NUL byte: the first NUL ends what can be read. A line cut by one
/// comes back without its newline, like a torn line; a NUL where a line would start is the end.
pub(super) struct SegmentLines {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    buffer: Vec<u8>,
    /// Where the zeros ahead of the written lines start, once reached.
    padding_at: Option<u64>,
}

impl SegmentLines {
    pub(super) fn open(path: &Path, from: u64) -> Result<Self, LedgerError> {
        let mut file = File::open(path).map_err(io_error(path))?;
        if from > 0 {
            file.seek(SeekFrom::Start(from)).map_err(io_error(path))?;
        }
        Ok(SegmentLines {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            offset: from,
            buffer: Vec::new(),
            padding_at: None,
        })
    }

    /// The next line (newline included when there is one) and its offset; `None` at the end
    /// (of the file, or of what was written before the preallocated zeros).
    pub(super) fn next_line(&mut self) -> Result<Option<(u64, &[u8])>, LedgerError> {
        self.buffer.clear();
        if self.padding_at.is_some() {
            return Ok(None);
        }
        loop {
            let available = self.reader.fill_buf().map_err(io_error(&self.path))?;
            if available.is_empty() {
                break;
            }
            match available.iter().position(|&b| b == b'\n' || b == 0) {
                Some(at) if available[at] == 0 => {
                    self.buffer.extend_from_slice(&available[..at]);
                    self.reader.consume(at);
                    self.padding_at = Some(self.offset + self.buffer.len() as u64);
                    break;
                }
                Some(at) => {
                    self.buffer.extend_from_slice(&available[..=at]);
                    self.reader.consume(at + 1);
                    break;
                }
                None => {
                    let length = available.len();
                    self.buffer.extend_from_slice(available);
                    self.reader.consume(length);
                }
            }
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let start = self.offset;
        self.offset += self.buffer.len() as u64;
        Ok(Some((start, &self.buffer)))
    }

    /// Where the segment's preallocated zeros start, if reading reached them.
    pub(super) fn padding_at(&self) -> Option<u64> {
        self.padding_at
    }
}

/// Appends the canonical JSON of an `Entry` to `out`, from the canonical JSON of what it holds
/// under `key` ("record", "approval_request" or "search"): RFC 8785 orders the keys, and each
/// sorts before "seq".
pub(super) fn write_entry(seq: u64, key: &str, recorded: &[u8], out: &mut Vec<u8>) {
    debug_assert!(key < "seq");
    out.push(b'{');
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(recorded);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b'}');
}

pub(super) fn chain_hash(prev: &[u8; 32], entry: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(entry);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::SegmentLines;

    fn lines_of(bytes: &[u8]) -> (Vec<(u64, Vec<u8>)>, Option<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, bytes).unwrap();
        let mut lines = SegmentLines::open(&path, 0).unwrap();
        let mut read = Vec::new();
        while let Some((offset, line)) = lines.next_line().unwrap() {
            read.push((offset, line.to_vec()));
        }
        (read, lines.padding_at())
    }

    #[test]
    fn reading_stops_at_the_zeros_laid_ahead_and_a_line_they_cut_reads_as_torn() {
        let zeros = vec![0u8; 100_000];
        // Whole lines, then zeros: the lines, and where the zeros start.
        let (read, padding) = lines_of(&[b"{\"a\":1}\n{\"b\":2}\n".as_slice(), &zeros].concat());
        assert_eq!(
            read,
            [(0, b"{\"a\":1}\n".to_vec()), (8, b"{\"b\":2}\n".to_vec())]
        );
        assert_eq!(padding, Some(16));
        // A line cut by zeros (and bytes after them, as an unflushed page would leave): the
        // line without its newline, and nothing after it.
        let (read, padding) =
            lines_of(&[b"{\"a\":1}\n{\"b\"".as_slice(), &zeros, b"2}\n{\"c\":3}\n"].concat());
        assert_eq!(
            read,
            [(0, b"{\"a\":1}\n".to_vec()), (8, b"{\"b\"".to_vec())]
        );
        assert_eq!(padding, Some(12));
        // No zeros: every line, the last one without its newline as written.
        let (read, padding) = lines_of(b"{\"a\":1}\n{\"b\"");
        assert_eq!(read.len(), 2);
        assert_eq!(padding, None);
    }
}
