//! The provenance ledger: one record per decision (allow or deny, cached or fresh), appended to
//! segment files in the data folder as a hash chain (each entry hashes the previous entry's hash
//! with its own RFC 8785 canonical JSON), sealed every N records or T seconds by an Ed25519-signed
//! checkpoint. A writer thread batches concurrent appends into one write and one fsync (group
//! commit); in durable mode a Check is answered only after its record is on disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::clock::UnixMillis;
use crate::engine::{CheckRequest, ContextValue, Decision, Effect, EntityRef};

/// The hash before the first entry.
const GENESIS: [u8; 32] = [0; 32];
const SEGMENT_PREFIX: &str = "segment-";
const HEAD_FILE: &str = "ledger.head";
const KEY_FILE: &str = "ledger-signing.key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LedgerMode {
    /// A Check returns only once its record is on disk (fsync, shared by concurrent Checks).
    Durable,
    /// A Check returns once its record is queued; a crash can lose the queue and the batch
    /// being written (at most `ledger_queue` records).
    Async,
    /// No ledger at all.
    Off,
}

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub dir: PathBuf,
    pub mode: LedgerMode,
    pub checkpoint_records: u64,
    pub checkpoint_interval: Duration,
    pub segment_bytes: u64,
    /// Records waiting for the writer, at most (appends wait when it is full: nothing is dropped).
    pub queue: usize,
    /// Context keys whose values are replaced by "***" in records.
    pub mask_keys: Vec<String>,
    /// The signing key file; `dir/ledger-signing.key` (created on first start) when `None`.
    pub signing_key: Option<PathBuf>,
}

/// An entity as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityName {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub email: Option<String>,
    pub entity: EntityName,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub actions: Vec<String>,
    pub approver: EntityName,
    pub expires_at: String,
    pub id: String,
    pub not_before: String,
    pub playbook: Option<String>,
    pub replay_suspected: bool,
    pub revoked: bool,
    pub scope: EntityName,
    pub subject: EntityName,
    pub ticket: String,
    pub valid_at_decision: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub message: String,
    pub policy_id: String,
}

/// What the ledger keeps of one decision. The fields of this struct and of those it holds are
/// declared in sorted order, so serde_json writes them as RFC 8785 does (see `canonical`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub action: String,
    pub answered_from_cache: bool,
    pub approval: Option<ApprovalRecord>,
    /// The approval id the caller presented, found or not.
    pub approval_presented: Option<String>,
    /// The caller as the transport saw it (peer address), when known.
    pub caller: Option<String>,
    /// The caller's context, with the configured keys masked.
    pub context: serde_json::Value,
    pub decision: String,
    pub decision_id: String,
    pub errors: Vec<ErrorRecord>,
    pub evaluation_id: String,
    pub facts_version: String,
    pub owner: Option<OwnerRecord>,
    pub policy_version: String,
    pub principal: EntityName,
    pub principal_status: Option<String>,
    pub reasons: Vec<String>,
    pub request_id: Option<String>,
    pub resource: EntityName,
    pub resource_scopes: Vec<EntityName>,
    pub time: String,
    pub trace_id: Option<String>,
    pub valid_until: String,
}

/// The hashed part of an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    record: Record,
}

/// A line of a segment file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
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

/// A signed statement: the chain up to `seq` has head hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub head: String,
    pub time: String,
    pub key_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error("the ledger is not accepting records: {0}")]
    Unavailable(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn entry_hash(prev: &[u8; 32], entry: &Entry) -> [u8; 32] {
    chain_hash(
        prev,
        &serde_json_canonicalizer::to_vec(entry).expect("records serialise"),
    )
}

fn checkpoint_bytes(checkpoint: &Checkpoint) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(checkpoint).expect("checkpoints serialise")
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

fn segments(dir: &Path) -> Result<Vec<PathBuf>, LedgerError> {
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
        }
    }
}

/// A summary of a sound ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: u64,
    /// Records after the last checkpoint (sound, but not yet signed).
    pub unsealed: u64,
    pub head: [u8; 32],
}

/// A ledger read back: every entry, and where the last good byte of the last segment is.
struct Scan {
    entries: Vec<(Entry, [u8; 32], Place)>,
    checkpoints: u64,
    last_checkpoint_seq: Option<u64>,
    /// The last segment's path and the length of its sound prefix, if its end is torn.
    torn_tail: Option<(PathBuf, u64)>,
}

/// Reads and checks every segment in `dir`. `key` checks checkpoint signatures; a torn last
/// line is reported in `Scan::torn_tail` (recovery cuts it; `verify` calls it truncation).
fn scan(dir: &Path, key: &VerifyingKey) -> Result<Result<Scan, Damage>, LedgerError> {
    let segments = segments(dir)?;
    let mut raw: Vec<(Line, Place)> = Vec::new();
    let mut torn_tail = None;
    for (index, path) in segments.iter().enumerate() {
        let file = File::open(path).map_err(io_error(path))?;
        let mut reader = BufReader::new(file);
        let mut offset = 0u64;
        let mut line_number = 0;
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let read = reader
                .read_until(b'\n', &mut buffer)
                .map_err(io_error(path))?;
            if read == 0 {
                break;
            }
            line_number += 1;
            let place = Place {
                segment: path.clone(),
                line: line_number,
                offset,
                length: read as u64,
            };
            let complete = buffer.last() == Some(&b'\n');
            let is_last_segment = index + 1 == segments.len();
            match serde_json::from_slice::<Line>(&buffer) {
                Ok(line) if complete => raw.push((line, place)),
                _ if !complete && is_last_segment => {
                    torn_tail = Some((path.clone(), offset));
                    break;
                }
                _ => return Ok(Err(Damage::Unreadable { place })),
            }
            offset += read as u64;
        }
    }

    let present: std::collections::HashSet<u64> = raw
        .iter()
        .filter_map(|(line, _)| match line {
            Line::Entry { entry, .. } => Some(entry.seq),
            Line::Checkpoint { .. } => None,
        })
        .collect();
    let mut entries = Vec::new();
    let mut head = GENESIS;
    let mut expected = 1u64;
    let mut checkpoints = 0;
    let mut last_checkpoint_seq = None;
    for (line, place) in raw {
        match line {
            Line::Entry { entry, prev, hash } => {
                if entry.seq != expected {
                    let found = entry.seq;
                    return Ok(Err(if present.contains(&expected) {
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
                    }));
                }
                if prev != hex::encode(head) {
                    return Ok(Err(Damage::BrokenLink {
                        seq: entry.seq,
                        place,
                    }));
                }
                let computed = entry_hash(&head, &entry);
                if hash != hex::encode(computed) {
                    return Ok(Err(Damage::Edited {
                        seq: entry.seq,
                        place,
                    }));
                }
                head = computed;
                expected += 1;
                entries.push((*entry, computed, place));
            }
            Line::Checkpoint {
                checkpoint,
                signature,
            } => {
                let bad = |detail: &str| Damage::BadCheckpoint {
                    seq: checkpoint.seq,
                    detail: detail.to_owned(),
                    place: place.clone(),
                };
                if checkpoint.seq != expected - 1 || checkpoint.head != hex::encode(head) {
                    return Ok(Err(bad("it does not name the chain's head at that point")));
                }
                if let Err(damage) = verify_signature(&checkpoint, &signature, key) {
                    return Ok(Err(bad(&damage)));
                }
                checkpoints += 1;
                last_checkpoint_seq = Some(checkpoint.seq);
            }
        }
    }
    Ok(Ok(Scan {
        entries,
        checkpoints,
        last_checkpoint_seq,
        torn_tail,
    }))
}

fn verify_signature(
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

/// Checks the whole ledger in `dir`: chain, sequence, checkpoint signatures, and that it reaches
/// the last signed head. `Ok(Err(damage))` names the first problem.
pub fn verify(dir: &Path, key: &VerifyingKey) -> Result<Result<Verified, Damage>, LedgerError> {
    let scan = match scan(dir, key)? {
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
    if let Some(head) = read_head(dir, key)? {
        match head {
            Err(detail) => {
                return Ok(Err(Damage::BadCheckpoint {
                    seq: 0,
                    detail,
                    place: head_place(dir),
                }));
            }
            Ok(checkpoint) => {
                let at = scan.entries.get((checkpoint.seq as usize).wrapping_sub(1));
                if checkpoint.seq > records {
                    return Ok(Err(Damage::Truncated {
                        detail: format!(
                            "the last signed checkpoint covers record {} but the ledger ends at record {records}",
                            checkpoint.seq
                        ),
                    }));
                }
                if checkpoint.seq > 0
                    && at.map(|(_, hash, _)| hex::encode(hash)) != Some(checkpoint.head.clone())
                {
                    return Ok(Err(Damage::BadCheckpoint {
                        seq: checkpoint.seq,
                        detail: "the signed head does not match the chain".into(),
                        place: head_place(dir),
                    }));
                }
            }
        }
    }
    Ok(Ok(Verified {
        records,
        checkpoints: scan.checkpoints,
        unsealed: records - scan.last_checkpoint_seq.unwrap_or(0),
        head: scan.entries.last().map_or(GENESIS, |(_, hash, _)| *hash),
    }))
}

fn head_place(dir: &Path) -> Place {
    Place {
        segment: dir.join(HEAD_FILE),
        line: 1,
        offset: 0,
        length: 0,
    }
}

/// The last checkpoint, kept apart from the segments so a cut-off tail is noticed.
fn read_head(
    dir: &Path,
    key: &VerifyingKey,
) -> Result<Option<Result<Checkpoint, String>>, LedgerError> {
    let path = dir.join(HEAD_FILE);
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
        return Ok(Some(Err("the head file is not a checkpoint".into())));
    };
    Ok(Some(
        verify_signature(&checkpoint, &signature, key).map(|()| checkpoint),
    ))
}

/// Records after `after` matching `filter`, read in order without re-verifying the chain (the
/// server verified it at start and has written it since).
fn stored_records(
    dir: &Path,
    filter: &Filter,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredRecord>, LedgerError> {
    let mut found = Vec::new();
    for path in segments(dir)? {
        // Segments are named by their first sequence number.
        let file = File::open(&path).map_err(io_error(&path))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io_error(&path))?;
            let Ok(Line::Entry { entry, hash, .. }) = serde_json::from_str::<Line>(&line) else {
                continue;
            };
            if entry.seq > after && filter.matches(&entry.record) {
                found.push(StoredRecord {
                    seq: entry.seq,
                    hash,
                    record: entry.record,
                });
                if found.len() >= limit {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}

/// Every record in the ledger, in order (for `warrant log show` and `search`).
pub fn records(dir: &Path, key: &VerifyingKey) -> Result<Vec<Record>, LedgerError> {
    match scan(dir, key)? {
        Ok(scan) => Ok(scan
            .entries
            .into_iter()
            .map(|(entry, _, _)| entry.record)
            .collect()),
        Err(damage) => Err(LedgerError::Corrupt(format!(
            "the ledger does not verify ({damage}); run `warrant log verify`"
        ))),
    }
}

/// Where a record's line is.
#[derive(Debug, Clone)]
struct Location {
    segment: Arc<PathBuf>,
    offset: u64,
    length: u64,
}

/// Decision id to the line of its record: rebuilt from the segments at every start, kept up to
/// date by the writer.
type Index = Arc<RwLock<HashMap<String, Location>>>;

/// A record as stored: its place in the chain and its canonical JSON.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: u64,
    pub hash: String,
    pub record: Record,
}

/// What `ListDecisions` and `warrant log search` select on; every given part must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub principal: Option<EntityName>,
    /// An approval id as presented, or a ticket.
    pub approval: Option<String>,
    /// "ALLOW" or "DENY", any case.
    pub decision: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
}

impl Filter {
    pub fn matches(&self, record: &Record) -> bool {
        let time = UnixMillis::parse_rfc3339(&record.time);
        self.principal
            .as_ref()
            .is_none_or(|p| &record.principal == p)
            && self.approval.as_ref().is_none_or(|a| {
                record.approval_presented.as_ref() == Some(a)
                    || record.approval.as_ref().is_some_and(|x| &x.ticket == a)
            })
            && self
                .decision
                .as_ref()
                .is_none_or(|d| record.decision.eq_ignore_ascii_case(d))
            && self.since.is_none_or(|s| time.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| time.is_some_and(|t| t < u))
    }
}

struct Pending {
    decision_id: String,
    /// The record's canonical JSON, made by the caller's thread so the writer only chains.
    record: Vec<u8>,
    done: Option<oneshot::Sender<Result<u64, LedgerError>>>,
}

/// A record's RFC 8785 canonical JSON. serde_json writes the same bytes when the keys are in
/// sorted order (the record's fields are declared so; the context's keys are checked, and for
/// ASCII keys byte order is RFC 8785's UTF-16 order) and every number is an integer RFC 8785 prints
/// exactly (|n| <= 2^53). Anything else goes through the general canonicaliser, which is slower.
fn canonical(record: &Record) -> serde_json::Result<Vec<u8>> {
    fn plain(value: &serde_json::Value) -> bool {
        use serde_json::Value;
        const EXACT: i64 = 1 << 53;
        match value {
            Value::Number(n) => n.as_i64().is_some_and(|n| (-EXACT..=EXACT).contains(&n)),
            Value::Array(items) => items.iter().all(plain),
            // serde_json keeps maps in insertion order here (a dependency turns on
            // `preserve_order`), so the keys must already be sorted.
            Value::Object(fields) => {
                fields.keys().zip(fields.keys().skip(1)).all(|(a, b)| a < b)
                    && fields.iter().all(|(k, v)| k.is_ascii() && plain(v))
            }
            Value::Null | Value::Bool(_) | Value::String(_) => true,
        }
    }
    if plain(&record.context) {
        serde_json::to_vec(record)
    } else {
        serde_json_canonicalizer::to_vec(record)
    }
}

/// A record's canonical JSON as text.
pub fn canonical_json(record: &Record) -> serde_json::Result<String> {
    canonical(record).map(|bytes| String::from_utf8(bytes).expect("JSON is UTF-8"))
}

/// The canonical JSON of `Entry { seq, record }` from the record's canonical JSON: RFC 8785
/// orders the keys, and "record" sorts before "seq".
fn entry_bytes(seq: u64, record: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(record.len() + 32);
    bytes.extend_from_slice(b"{\"record\":");
    bytes.extend_from_slice(record);
    bytes.extend_from_slice(format!(",\"seq\":{seq}}}").as_bytes());
    bytes
}

fn chain_hash(prev: &[u8; 32], entry: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(entry);
    hasher.finalize().into()
}

/// The running ledger: hands records to the writer thread.
pub struct Ledger {
    dir: PathBuf,
    index: Index,
    sender: mpsc::SyncSender<Pending>,
    mode: LedgerMode,
    mask_keys: Vec<String>,
    failed: Arc<AtomicBool>,
    /// Records appended but not yet on disk (for the async mode's bound).
    pending: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

/// The ledger's counters, for the metrics endpoint.
#[derive(Debug, Clone, Copy)]
pub struct LedgerStats {
    pub written: u64,
    pub pending: u64,
    pub failed: bool,
}

impl Ledger {
    /// Opens the ledger in `settings.dir`: checks what is there (refusing a damaged ledger),
    /// cuts a torn last write, and starts the writer thread.
    pub fn open(settings: &LedgerSettings) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(&settings.dir).map_err(io_error(&settings.dir))?;
        let key_path = settings
            .signing_key
            .clone()
            .unwrap_or_else(|| settings.dir.join(KEY_FILE));
        let signing_key = load_or_create_signing_key(&key_path)?;
        let verifying = signing_key.verifying_key();
        let scan = scan(&settings.dir, &verifying)?.map_err(|damage| {
            LedgerError::Corrupt(format!(
                "the ledger in {} is damaged: {damage}; refusing to append to it",
                settings.dir.display()
            ))
        })?;
        if let Some((segment, length)) = &scan.torn_tail {
            tracing::warn!(segment = %segment.display(), length, "cutting a torn last record left by a crash");
            let file = OpenOptions::new()
                .write(true)
                .open(segment)
                .map_err(io_error(segment))?;
            file.set_len(*length)
                .and_then(|()| file.sync_all())
                .map_err(io_error(segment))?;
        }
        let (next_seq, head) = scan
            .entries
            .last()
            .map_or((1, GENESIS), |(entry, hash, _)| (entry.seq + 1, *hash));
        let last_segment = segments(&settings.dir)?.pop();
        tracing::info!(
            dir = %settings.dir.display(),
            records = next_seq - 1,
            key_id = %key_id(&verifying),
            mode = ?settings.mode,
            "ledger open"
        );
        let mut index = HashMap::with_capacity(scan.entries.len());
        let mut segment_names: HashMap<PathBuf, Arc<PathBuf>> = HashMap::new();
        for (entry, _, place) in &scan.entries {
            let segment = segment_names
                .entry(place.segment.clone())
                .or_insert_with(|| Arc::new(place.segment.clone()));
            index.insert(
                entry.record.decision_id.clone(),
                Location {
                    segment: Arc::clone(segment),
                    offset: place.offset,
                    length: place.length,
                },
            );
        }
        let index: Index = Arc::new(RwLock::new(index));
        let (sender, receiver) = mpsc::sync_channel(settings.queue.max(1));
        let failed = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            written: Arc::clone(&written),
            index: Arc::clone(&index),
            dir: settings.dir.clone(),
            segment: None,
            segment_path: last_segment,
            segment_bytes: settings.segment_bytes,
            next_seq,
            head,
            since_checkpoint: next_seq - 1 - scan.last_checkpoint_seq.unwrap_or(0),
            last_checkpoint: Instant::now(),
            checkpoint_records: settings.checkpoint_records.max(1),
            checkpoint_interval: settings.checkpoint_interval,
            key: signing_key,
            durable: settings.mode == LedgerMode::Durable,
            failed: Arc::clone(&failed),
            pending: Arc::clone(&pending),
        };
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| LedgerError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Ledger {
            dir: settings.dir.clone(),
            index,
            sender,
            mode: settings.mode,
            mask_keys: settings.mask_keys.clone(),
            failed,
            pending,
            written,
        })
    }

    pub fn mask_keys(&self) -> &[String] {
        &self.mask_keys
    }

    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            written: self.written.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// The record of one decision.
    pub fn get(&self, decision_id: &str) -> Result<Option<StoredRecord>, LedgerError> {
        let Some(location) = self
            .index
            .read()
            .expect("index lock")
            .get(decision_id)
            .cloned()
        else {
            return Ok(None);
        };
        let path = location.segment.as_path();
        let mut file = File::open(path).map_err(io_error(path))?;
        let mut line = vec![0; location.length as usize];
        file.seek(SeekFrom::Start(location.offset))
            .and_then(|_| file.read_exact(&mut line))
            .map_err(io_error(path))?;
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Entry { entry, hash, .. }) => Ok(Some(StoredRecord {
                seq: entry.seq,
                hash,
                record: entry.record,
            })),
            _ => Err(LedgerError::Corrupt(format!(
                "{}: no record at byte {}",
                path.display(),
                location.offset
            ))),
        }
    }

    /// Up to `limit` records after sequence number `after` that match `filter`, in order.
    pub fn list(
        &self,
        filter: &Filter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, LedgerError> {
        stored_records(&self.dir, filter, after, limit)
    }

    /// Appends records (one decision's, or a batch's). In durable mode this resolves once all
    /// are on disk; in async mode once they are queued.
    pub async fn append(&self, records: Vec<Record>) -> Result<(), LedgerError> {
        let stopped = || LedgerError::Unavailable("the ledger writer has stopped".into());
        if self.failed.load(Ordering::Relaxed) {
            return Err(LedgerError::Unavailable("an earlier write failed".into()));
        }
        let mut waits = Vec::new();
        for record in records {
            let decision_id = record.decision_id.clone();
            let record = canonical(&record)
                .map_err(|e| LedgerError::Unavailable(format!("cannot serialise a record: {e}")))?;
            let done = (self.mode == LedgerMode::Durable).then(|| {
                let (sender, receiver) = oneshot::channel();
                waits.push(receiver);
                sender
            });
            self.pending.fetch_add(1, Ordering::Relaxed);
            // A full queue makes the caller wait: backpressure, never a dropped record.
            match self.sender.try_send(Pending {
                decision_id,
                record,
                done,
            }) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(pending)) => {
                    let sender = self.sender.clone();
                    tokio::task::spawn_blocking(move || sender.send(pending).map_err(|_| ()))
                        .await
                        .map_err(|_| stopped())?
                        .map_err(|()| stopped())?;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
            }
        }
        // All were sent before any wait, so they share the writer's next fsync.
        for wait in waits {
            wait.await.map_err(|_| stopped())??;
        }
        Ok(())
    }
}

struct Writer {
    written: Arc<AtomicU64>,
    index: Index,
    dir: PathBuf,
    segment: Option<File>,
    segment_path: Option<PathBuf>,
    segment_bytes: u64,
    next_seq: u64,
    head: [u8; 32],
    since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpoint_records: u64,
    checkpoint_interval: Duration,
    key: SigningKey,
    durable: bool,
    failed: Arc<AtomicBool>,
    pending: Arc<AtomicU64>,
}

impl Writer {
    fn run(&mut self, receiver: mpsc::Receiver<Pending>) {
        loop {
            let first = match receiver.recv_timeout(self.checkpoint_interval) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.since_checkpoint > 0
                        && let Err(error) = self.checkpoint()
                    {
                        self.fail(&error);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // Group commit: everything that is waiting goes into one write and one fsync.
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match receiver.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let outcome = self.write_batch(&batch);
            self.pending
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            match outcome {
                Ok(first_seq) => {
                    self.written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for (i, pending) in batch.into_iter().enumerate() {
                        if let Some(done) = pending.done {
                            let _ = done.send(Ok(first_seq + i as u64));
                        }
                    }
                }
                Err(error) => {
                    self.fail(&error);
                    for pending in batch {
                        if let Some(done) = pending.done {
                            let _ = done.send(Err(LedgerError::Unavailable(error.to_string())));
                        }
                    }
                }
            }
        }
        if self.since_checkpoint > 0 && !self.failed.load(Ordering::Relaxed) {
            let _ = self.checkpoint();
        }
    }

    fn fail(&self, error: &LedgerError) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(%error, "ledger write failed; every later Check is denied until restart");
        }
    }

    fn open_segment(&mut self) -> Result<(PathBuf, &mut File), LedgerError> {
        let rotate = match (&self.segment, &self.segment_path) {
            (None, Some(path)) => path
                .metadata()
                .map(|m| m.len() >= self.segment_bytes)
                .unwrap_or(true),
            (Some(file), Some(path)) => {
                file.metadata().map_err(io_error(path))?.len() >= self.segment_bytes
            }
            (_, None) => true,
        };
        if rotate {
            let path = self
                .dir
                .join(format!("{SEGMENT_PREFIX}{:020}.jsonl", self.next_seq));
            self.segment = None;
            self.segment_path = Some(path);
        }
        let path = self
            .segment_path
            .clone()
            .expect("a segment path was chosen");
        if self.segment.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            if rotate {
                // The new file's name must survive a crash too.
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_error(&self.dir))?;
            }
            self.segment = Some(file);
        }
        Ok((path, self.segment.as_mut().expect("just opened")))
    }

    fn write_batch(&mut self, batch: &[Pending]) -> Result<u64, LedgerError> {
        let first_seq = self.next_seq;
        let mut bytes = Vec::with_capacity(batch.len() * 1024);
        let mut head = self.head;
        let mut lines = Vec::with_capacity(batch.len());
        for (i, pending) in batch.iter().enumerate() {
            let start = bytes.len() as u64;
            let entry = entry_bytes(first_seq + i as u64, &pending.record);
            let hash = chain_hash(&head, &entry);
            // Itself canonical JSON: "entry" < "hash" < "prev".
            bytes.extend_from_slice(b"{\"entry\":");
            bytes.extend_from_slice(&entry);
            bytes.extend_from_slice(b",\"hash\":\"");
            bytes.extend_from_slice(hex::encode(hash).as_bytes());
            bytes.extend_from_slice(b"\",\"prev\":\"");
            bytes.extend_from_slice(hex::encode(head).as_bytes());
            bytes.extend_from_slice(b"\"}\n");
            head = hash;
            lines.push((
                pending.decision_id.clone(),
                start,
                bytes.len() as u64 - start,
            ));
        }
        let durable = self.durable;
        let (path, file) = self.open_segment()?;
        let base = file.metadata().map_err(io_error(&path))?.len();
        file.write_all(&bytes).map_err(io_error(&path))?;
        if durable {
            file.sync_data().map_err(io_error(&path))?;
        }
        let segment = Arc::new(path);
        let mut index = self.index.write().expect("index lock");
        for (decision_id, start, length) in lines {
            index.insert(
                decision_id,
                Location {
                    segment: Arc::clone(&segment),
                    offset: base + start,
                    length,
                },
            );
        }
        drop(index);
        self.head = head;
        self.next_seq += batch.len() as u64;
        self.since_checkpoint += batch.len() as u64;
        if self.since_checkpoint >= self.checkpoint_records
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval
        {
            self.checkpoint()?;
        }
        Ok(first_seq)
    }

    /// Signs the chain's head, appends the checkpoint and makes it the head file.
    fn checkpoint(&mut self) -> Result<(), LedgerError> {
        let checkpoint = Checkpoint {
            seq: self.next_seq - 1,
            head: hex::encode(self.head),
            time: crate::clock::Clock::now(&crate::clock::SystemClock).to_rfc3339(),
            key_id: key_id(&self.key.verifying_key()),
        };
        let signature = hex::encode(self.key.sign(&checkpoint_bytes(&checkpoint)).to_bytes());
        let line = Line::Checkpoint {
            checkpoint,
            signature,
        };
        let mut bytes = serde_json_canonicalizer::to_vec(&line).expect("lines serialise");
        bytes.push(b'\n');
        let (path, file) = self.open_segment()?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(io_error(&path))?;
        let head_path = self.dir.join(HEAD_FILE);
        let temporary = self.dir.join(format!("{HEAD_FILE}.tmp"));
        std::fs::write(&temporary, &bytes)
            .and_then(|()| File::open(&temporary)?.sync_all())
            .and_then(|()| std::fs::rename(&temporary, &head_path))
            .and_then(|()| File::open(&self.dir)?.sync_all())
            .map_err(io_error(&head_path))?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

fn name(entity: &EntityRef) -> EntityName {
    EntityName {
        type_name: entity.type_name.clone(),
        id: entity.id.clone(),
    }
}

fn context_json(value: &ContextValue, mask_keys: &[String]) -> serde_json::Value {
    use serde_json::Value;
    match value {
        ContextValue::Bool(b) => Value::Bool(*b),
        ContextValue::Long(n) => Value::from(*n),
        ContextValue::String(s) => Value::String(s.clone()),
        ContextValue::Set(items) => Value::Array(
            items
                .iter()
                .map(|item| context_json(item, mask_keys))
                .collect(),
        ),
        ContextValue::Record(fields) => Value::Object(masked_fields(fields, mask_keys)),
    }
}

/// A context as JSON, with the value of every key named in `mask_keys` (at any depth) hidden.
fn masked_fields(
    fields: &std::collections::BTreeMap<String, ContextValue>,
    mask_keys: &[String],
) -> serde_json::Map<String, serde_json::Value> {
    fields
        .iter()
        .map(|(key, value)| {
            let shown = if mask_keys
                .iter()
                .any(|masked| masked.eq_ignore_ascii_case(key))
            {
                serde_json::Value::String("***".into())
            } else {
                context_json(value, mask_keys)
            };
            (key.clone(), shown)
        })
        .collect()
}

impl Record {
    /// The record of `decision`, made for `request`, asked by `caller`.
    pub fn of(
        decision: &Decision,
        request: &CheckRequest,
        caller: Option<String>,
        mask_keys: &[String],
    ) -> Record {
        let provenance = &decision.provenance;
        let identity = provenance.identity.as_deref();
        let approval = provenance.approval.as_ref().map(|evidence| {
            let a = &evidence.approval;
            ApprovalRecord {
                id: a.uid.id().unescaped().to_owned(),
                ticket: a.ticket.clone(),
                approver: name(&a.approver),
                subject: name(&EntityRef::from_uid(&a.subject)),
                actions: a.actions.clone(),
                scope: name(&a.scope),
                not_before: a.not_before.to_rfc3339(),
                expires_at: a.expires_at.to_rfc3339(),
                revoked: a.revoked,
                playbook: a.playbook.clone(),
                valid_at_decision: evidence.valid_at_decision,
                replay_suspected: evidence.replay_suspected,
            }
        });
        Record {
            decision_id: decision.decision_id.to_string(),
            time: provenance.decided_at.to_rfc3339(),
            caller,
            principal: name(&provenance.principal),
            owner: identity
                .and_then(|i| i.owner.as_ref())
                .map(|owner| OwnerRecord {
                    entity: name(&owner.entity),
                    name: owner.name.clone(),
                    email: owner.email.clone(),
                }),
            principal_status: identity.and_then(|i| i.status.clone()),
            action: request.action.clone(),
            resource: name(&provenance.resource),
            resource_scopes: provenance.resource_scopes.iter().map(name).collect(),
            approval_presented: request.approval_id.clone(),
            approval,
            decision: match decision.effect {
                Effect::Allow => "ALLOW".into(),
                Effect::Deny => "DENY".into(),
            },
            reasons: decision.reasons.clone(),
            errors: decision
                .errors
                .iter()
                .map(|e| ErrorRecord {
                    policy_id: e.policy_id.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            policy_version: decision.policy_version.to_string(),
            facts_version: provenance.facts_version.to_string(),
            answered_from_cache: provenance.answered_from_cache,
            evaluation_id: provenance.evaluation_id.to_string(),
            valid_until: decision.valid_until.to_rfc3339(),
            request_id: decision.request_id.clone(),
            trace_id: None,
            context: serde_json::Value::Object(masked_fields(&request.context, mask_keys)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(context: serde_json::Value) -> Record {
        let name = |t: &str, i: &str| EntityName {
            type_name: t.into(),
            id: i.into(),
        };
        Record {
            decision_id: "01a2".into(),
            time: "2026-11-27T12:00:00Z".into(),
            caller: Some("127.0.0.1:1".into()),
            principal: name("ServiceAccount", "bot-é"),
            owner: None,
            principal_status: Some("active".into()),
            action: "update".into(),
            resource: name("Config", "a\"b\\c\u{1}"),
            resource_scopes: vec![name("Scope", "x")],
            approval_presented: None,
            approval: None,
            decision: "DENY".into(),
            reasons: vec!["r".into()],
            errors: vec![],
            policy_version: "v".into(),
            facts_version: "f".into(),
            answered_from_cache: false,
            evaluation_id: "01a2".into(),
            valid_until: "2026-11-27T12:01:00Z".into(),
            request_id: None,
            trace_id: None,
            context,
        }
    }

    proptest::proptest! {
        #[test]
        fn records_serialise_exactly_as_rfc_8785_says(
            keys in proptest::collection::vec("[ -~]{0,6}", 0..5),
            texts in proptest::collection::vec("\\PC{0,6}|[\\x00-\\x1f\\x7f\"\\\\]{1,3}", 5),
            numbers in proptest::collection::vec(any_number(), 5),
            id in "\\PC{0,8}",
        ) {
            let mut context = serde_json::Map::new();
            for (i, key) in keys.iter().enumerate() {
                let value = match i % 3 {
                    0 => serde_json::json!(texts[i]),
                    1 => serde_json::json!(numbers[i]),
                    _ => serde_json::json!({"n": numbers[i], "s": texts[i], "l": [texts[i], numbers[i]]}),
                };
                context.insert(key.clone(), value);
            }
            let mut record = record(serde_json::Value::Object(context));
            record.principal.id = id;
            proptest::prop_assert_eq!(
                String::from_utf8(canonical(&record).unwrap()).unwrap(),
                serde_json_canonicalizer::to_string(&record).unwrap()
            );
        }
    }

    fn any_number() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![any::<i64>(), -1000i64..1000]
    }

    #[test]
    fn the_writer_builds_the_same_bytes_as_canonicalising_the_entry() {
        let context = serde_json::json!({"z": 1, "a": [true, "\u{1F600}"], "big": i64::MAX, "\u{e9}": {"y": -3, "b": "\t"}});
        let record = record(context);
        let fast = entry_bytes(42, &canonical(&record).unwrap());
        let entry = Entry { seq: 42, record };
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            serde_json_canonicalizer::to_string(&entry).unwrap()
        );
        // And what a verifier reads back canonicalises to the same bytes again.
        let line = serde_json_canonicalizer::to_string(&entry).unwrap();
        let parsed: Entry = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json_canonicalizer::to_string(&parsed).unwrap(), line);
    }
}
