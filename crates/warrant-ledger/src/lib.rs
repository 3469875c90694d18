//! The provenance ledger: one record per decision (allow or deny, cached or fresh), appended to
//! segment files in the data folder as a hash chain (each entry hashes the previous entry's hash
//! with its own RFC 8785 canonical JSON), sealed every N records or T seconds by an Ed25519-signed
//! checkpoint. A writer thread batches concurrent appends into one write and one fsync (group
//! commit); in durable mode a Check is answered only after its record is on disk.
//!
//! May depend on: `warrant-domain`, `warrant-files`.
//! Invariant: a record acknowledged in durable mode is on disk; the chain breaks visibly if any
//!   record changes.

mod archive;
mod chain;
mod damage;
mod export;
mod index;
mod proof;
mod record;
mod search;
mod terms;
mod usage;
mod writer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use tokio::sync::oneshot;

use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;

pub use archive::{Archived, Cut, archive};
pub use chain::{
    Checkpoint, SignedHead, Verified, VerifyOptions, key_id, load_or_create_signing_key, read_head,
    records, verify,
};
pub use damage::{Damage, Place};
pub use export::export;
pub use proof::{Proof, Standing};
pub use record::{
    ApprovalAdviceRecord, ApprovalRecord, ApprovalRequestRecord, ErrorRecord, OwnerRecord, Record,
    Recorded, SearchRecord, canonical_json,
};
pub use search::{Activity, Order};
pub use usage::{
    ATTEST_APPROVAL, ATTEST_IDENTITY, Allows, Attestation, Day, IdentityUse, KEEP_DAYS, Usage,
};

use chain::{Line, segments};
use record::{canonical, canonical_entry};
use writer::Writer;

/// Up to `limit` records of the ledger in `dir` that match `filter`, in `order`, through its
/// search index (for `warrant log search`, which reads a ledger without a server; the index
/// files it builds are the server's too).
pub fn search_ledger(
    dir: &Path,
    filter: &Filter,
    order: Order,
    limit: usize,
) -> Result<Vec<StoredRecord>, LedgerError> {
    search::find(
        dir,
        &terms::TermsCache::new(SHELL_INDEX_CACHE_BYTES),
        filter,
        order,
        limit,
    )
}

/// What one `warrant log search` holds of the index in memory.
const SHELL_INDEX_CACHE_BYTES: usize = 256 << 20;

/// The hash before the first entry.
const GENESIS: [u8; 32] = [0; 32];
const SEGMENT_PREFIX: &str = "segment-";
const HEAD_FILE: &str = "ledger.head";
/// Where the ledger starts once older segments are archived: the signed checkpoint at the cut.
const ANCHOR_FILE: &str = "ledger.anchor";
const KEY_FILE: &str = "ledger-signing.key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
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

impl LedgerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerMode::Durable => "durable",
            LedgerMode::Async => "async",
            LedgerMode::Off => "off",
        }
    }
}

impl std::str::FromStr for LedgerMode {
    type Err = UnknownLedgerMode;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "durable" => Ok(LedgerMode::Durable),
            "async" => Ok(LedgerMode::Async),
            "off" => Ok(LedgerMode::Off),
            _ => Err(UnknownLedgerMode(name.to_owned())),
        }
    }
}

/// A ledger mode by a name that is not one (`LedgerMode::NAMES`).
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a ledger mode: durable, async or off")]
pub struct UnknownLedgerMode(String);

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
    /// The replica whose chain this is, named in its records and checkpoints (`server` sets it).
    pub replica: Option<String>,
    /// The signing key file; `dir/ledger-signing.key` (created on first start) when `None`.
    pub signing_key: Option<PathBuf>,
    /// Retention: what the server itself moves to archive folders. `None`: keep everything.
    pub retention: Option<Retention>,
    /// The most bytes of the search index held in memory (the rest is read from its files).
    pub index_cache_bytes: usize,
    /// The most identities, approvals and policies the usage summary keeps (see `usage`).
    pub usage_max_entries: usize,
}

/// Keep in the ledger only what is younger than `max_age` and/or the newest `max_bytes`;
/// older sealed segments are archived (as `warrant log archive` does) into a new folder under
/// `archive_dir` every hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub archive_dir: PathBuf,
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
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
    pub principal: Option<EntityRef>,
    /// The action's id, e.g. `read`.
    pub action: Option<String>,
    pub resource: Option<EntityRef>,
    /// One of the decision's reasons (a policy id or a `warrant:*` reason).
    pub reason: Option<String>,
    /// An approval id as presented, or a ticket.
    pub approval: Option<String>,
    /// "ALLOW" or "DENY", any case.
    pub decision: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    /// Only decisions the shadow (candidate) policies would have decided otherwise.
    pub shadow_disagreed: bool,
}

impl Filter {
    pub fn matches(&self, record: &Record) -> bool {
        let time = UnixMillis::parse_rfc3339(&record.time);
        self.principal
            .as_ref()
            .is_none_or(|p| &record.principal == p)
            && self.action.as_ref().is_none_or(|a| &record.action == a)
            && self.resource.as_ref().is_none_or(|r| &record.resource == r)
            && self
                .reason
                .as_ref()
                .is_none_or(|r| record.reasons.iter().any(|x| x == r))
            && self.approval.as_ref().is_none_or(|a| {
                record.approval_presented.as_ref() == Some(a)
                    || record.approval.as_ref().is_some_and(|x| &x.ticket == a)
            })
            && self
                .decision
                .as_ref()
                .is_none_or(|d| record.decision.eq_ignore_ascii_case(d))
            && (!self.shadow_disagreed
                || record
                    .shadow
                    .as_ref()
                    .is_some_and(|shadow| !shadow.decision.eq_ignore_ascii_case(&record.decision)))
            && self.since.is_none_or(|s| time.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| time.is_some_and(|t| t < u))
    }
}

/// What the writer thread is sent.
enum Message {
    Record(Pending),
    /// Sign a checkpoint over everything written so far, then answer.
    Seal(oneshot::Sender<Result<(), LedgerError>>),
}

struct Pending {
    /// The decision's id, for a decision's record; `None` for an approval request's step or a
    /// search. (The lookup index holds only decisions.)
    decision_id: Option<String>,
    /// The entry's key for what it holds: "record", "approval_request" or "search".
    key: &'static str,
    /// Its canonical JSON, made by the caller's thread so the writer only chains.
    record: Vec<u8>,
    /// What the usage summary takes from a decision's record.
    seen: Option<Box<usage::Seen>>,
    done: Option<oneshot::Sender<Result<u64, LedgerError>>>,
}

/// The running ledger: hands records to the writer thread.
pub struct Ledger {
    /// Segments moved out by retention since start.
    archived: Arc<AtomicU64>,
    dir: PathBuf,
    /// The checkpoint in the head file, as the writer last published it.
    head: Arc<std::sync::Mutex<Option<SignedHead>>>,
    index: Index,
    sender: mpsc::SyncSender<Message>,
    mode: LedgerMode,
    mask_keys: Vec<String>,
    replica: Option<String>,
    failed: Arc<AtomicBool>,
    /// Records appended but not yet on disk (for the async mode's bound).
    pending: Arc<AtomicU64>,
    /// The key its checkpoints verify with.
    verifying: VerifyingKey,
    /// The search index's segments held in memory.
    terms: Arc<terms::TermsCache>,
    /// The usage summary, kept by the writer.
    usage: Arc<usage::UsageBook>,
    written: Arc<AtomicU64>,
}

/// The ledger's counters, for the metrics endpoint.
#[derive(Debug, Clone, Copy)]
pub struct LedgerStats {
    /// Segments moved to archives by retention since start.
    pub archived_segments: u64,
    pub written: u64,
    pub pending: u64,
    pub failed: bool,
    /// The search index's bytes held in memory.
    pub index_cache_bytes: u64,
    /// Entries the usage summary holds, and those it did not keep (as of its last merge).
    pub usage_entries: u64,
    pub usage_dropped: u64,
}

/// Where each decision of the active (last) segment is: what is kept in memory. Sealed
/// segments have index files; one missing (a ledger from before them, or a crash at rotation)
/// is built now, once.
fn active_index(dir: &Path, scan: &chain::Scan) -> Result<HashMap<String, Location>, LedgerError> {
    let mut sealed = segments(dir)?;
    let active = sealed.pop();
    for segment in &sealed {
        if !index::index_path(segment).exists() {
            tracing::info!(segment = %segment.display(), "building a missing segment index");
            index::build_index(segment)?;
        }
    }
    let mut index = HashMap::new();
    if let Some(active) = &active {
        let segment = Arc::new(active.clone());
        for entry in &scan.entries {
            if &entry.place.segment == active
                && let Some(decision_id) = &entry.decision_id
            {
                index.insert(
                    decision_id.clone(),
                    Location {
                        segment: Arc::clone(&segment),
                        offset: entry.place.offset,
                        length: entry.place.length,
                    },
                );
            }
        }
    }
    Ok(index)
}

impl Ledger {
    /// Opens the ledger in `settings.dir`: checks what is there (refusing a damaged ledger),
    /// cuts a torn last write, and starts the writer thread.
    pub fn open(settings: &LedgerSettings) -> Result<Ledger, LedgerError> {
        warrant_files::private_dir(&settings.dir).map_err(io_error(&settings.dir))?;
        let key_path = settings
            .signing_key
            .clone()
            .unwrap_or_else(|| settings.dir.join(KEY_FILE));
        let signing_key = load_or_create_signing_key(&key_path)?;
        let verifying = signing_key.verifying_key();
        // Start-up reads only what the newest signed head does not already vouch for: from the
        // segment that holds the head's record on (full verification is `warrant log verify`).
        let head = read_head(&settings.dir, &verifying)?.and_then(Result::ok);
        let archived = chain::read_checkpoint_file(&settings.dir.join(ANCHOR_FILE), &verifying)?
            .map(|anchor| {
                anchor.map_err(|detail| {
                    LedgerError::Corrupt(format!(
                        "{}: {detail}",
                        settings.dir.join(ANCHOR_FILE).display()
                    ))
                })
            })
            .transpose()?;
        let start = match (&head, &archived) {
            (Some(head), Some(anchor)) if head.checkpoint.seq <= anchor.checkpoint.seq => {
                chain::Start::After(&anchor.checkpoint)
            }
            (Some(head), _) => chain::Start::Within(&head.checkpoint),
            (None, Some(anchor)) => chain::Start::After(&anchor.checkpoint),
            (None, None) => {
                tracing::warn!("no signed head to start from: reading the whole ledger");
                chain::Start::Genesis
            }
        };
        let scan = scan_sound(&settings.dir, &verifying, start)?;
        if let Some((segment, length)) = &scan.torn_tail {
            tracing::warn!(segment = %segment.display(), length, "cutting a torn last record left by a crash");
        }
        // Zeros a durable writer laid ahead of its records are cut the same way (it lays them
        // afresh).
        if let Some((segment, length)) = scan.torn_tail.as_ref().or(scan.padding.as_ref()) {
            let file = OpenOptions::new()
                .write(true)
                .open(segment)
                .map_err(io_error(segment))?;
            file.set_len(*length)
                .and_then(|()| file.sync_all())
                .map_err(io_error(segment))?;
        }
        let scan = match quarantine_unsigned_tail(&settings.dir, &scan)? {
            // Cut: read what remains.
            true => scan_sound(&settings.dir, &verifying, start)?,
            false => scan,
        };
        let published = read_head(&settings.dir, &verifying)?.and_then(Result::ok);
        let (next_seq, head) = match (scan.entries.last(), &archived) {
            (Some(entry), _) => (entry.seq + 1, entry.hash),
            (None, Some(anchor)) => (
                anchor.checkpoint.seq + 1,
                hex::decode(&anchor.checkpoint.head)
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .unwrap_or(GENESIS),
            ),
            (None, None) => (1, GENESIS),
        };
        let last_segment = segments(&settings.dir)?.pop();
        tracing::info!(
            dir = %settings.dir.display(),
            records = next_seq - 1,
            key_id = %key_id(&verifying),
            mode = ?settings.mode,
            "ledger open"
        );
        let index: Index = Arc::new(RwLock::new(active_index(&settings.dir, &scan)?));
        let published = Arc::new(std::sync::Mutex::new(published));
        let (sender, receiver) = mpsc::sync_channel(settings.queue.max(1));
        let failed = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let usage = usage::UsageBook::start(&settings.dir, next_seq, settings.usage_max_entries)?;
        let mut writer = Writer {
            usage: Arc::clone(&usage),
            replica: settings.replica.clone(),
            written: Arc::clone(&written),
            index: Arc::clone(&index),
            dir: settings.dir.clone(),
            segment: None,
            segment_path: last_segment,
            segment_len: 0,
            segment_laid: 0,
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
            published: Arc::clone(&published),
            last_signed: None,
        };
        let archived = Arc::new(AtomicU64::new(0));
        if let Some(retention) = settings.retention.clone() {
            let dir = settings.dir.clone();
            let archived = Arc::clone(&archived);
            std::thread::Builder::new()
                .name("ledger-retention".into())
                .spawn(move || retain(&dir, &verifying, &retention, &archived))
                .map_err(|e| LedgerError::Unavailable(format!("cannot start retention: {e}")))?;
        }
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| LedgerError::Unavailable(format!("cannot start the writer: {e}")))?;
        let terms = Arc::new(terms::TermsCache::new(settings.index_cache_bytes));
        {
            let dir = settings.dir.clone();
            let cache = Arc::downgrade(&terms);
            std::thread::Builder::new()
                .name("ledger-indexer".into())
                .spawn(move || terms::follow(dir, cache))
                .map_err(|e| LedgerError::Unavailable(format!("cannot start the indexer: {e}")))?;
        }
        Ok(Ledger {
            archived,
            dir: settings.dir.clone(),
            head: published,
            index,
            sender,
            mode: settings.mode,
            mask_keys: settings.mask_keys.clone(),
            replica: settings.replica.clone(),
            failed,
            pending,
            verifying,
            terms,
            usage,
            written,
        })
    }

    /// The newest published checkpoint (the head file's), if any.
    pub fn head(&self) -> Option<SignedHead> {
        self.head.lock().ok().and_then(|head| head.clone())
    }

    pub fn mask_keys(&self) -> &[String] {
        &self.mask_keys
    }

    /// The replica whose chain this is.
    pub fn replica(&self) -> Option<&str> {
        self.replica.as_deref()
    }

    /// Bytes the ledger's files take, and bytes free on their file system (read at scrape
    /// time; `None` where the file system cannot say).
    pub fn disk_usage(&self) -> (u64, Option<u64>) {
        let used = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|meta| meta.len())
            .sum();
        let free = rustix::fs::statvfs(&self.dir)
            .ok()
            .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize));
        (used, free)
    }

    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            archived_segments: self.archived.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            index_cache_bytes: self.terms.bytes() as u64,
            usage_entries: self.usage.entries.load(Ordering::Relaxed),
            usage_dropped: self.usage.dropped.load(Ordering::Relaxed),
        }
    }

    /// Signs a checkpoint over every record written so far (at shutdown, so none is left
    /// unsealed) and waits for it to be on disk.
    pub async fn seal(&self) -> Result<(), LedgerError> {
        let (done, wait) = oneshot::channel();
        let sender = self.sender.clone();
        let stopped = || LedgerError::Unavailable("the ledger writer has stopped".into());
        tokio::task::spawn_blocking(move || sender.send(Message::Seal(done)).map_err(|_| ()))
            .await
            .map_err(|_| stopped())?
            .map_err(|()| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    /// The record of one decision.
    pub fn get(&self, decision_id: &str) -> Result<Option<StoredRecord>, LedgerError> {
        let Some(location) = self.locate(decision_id)? else {
            return Ok(None);
        };
        let path = location.segment.as_path();
        let mut file = File::open(path).map_err(io_error(path))?;
        let length = usize::try_from(location.length).map_err(|_| {
            LedgerError::Corrupt(format!("{}: a record longer than memory", path.display()))
        })?;
        let mut line = vec![0; length];
        file.seek(SeekFrom::Start(location.offset))
            .and_then(|_| file.read_exact(&mut line))
            .map_err(io_error(path))?;
        let entry = match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Entry { entry, hash, .. }) => Some((entry.seq, entry.recorded(), hash)),
            _ => None,
        };
        match entry {
            Some((seq, Some(Recorded::Decision(record)), hash)) => Ok(Some(StoredRecord {
                seq,
                hash,
                record: *record,
            })),
            _ => Err(LedgerError::Corrupt(format!(
                "{}: no record at byte {}",
                path.display(),
                location.offset
            ))),
        }
    }

    /// Where the record of decision `decision_id` is. The active segment's records are indexed
    /// in memory; every sealed segment has an index file (written when the writer left it).
    fn locate(&self, decision_id: &str) -> Result<Option<Location>, LedgerError> {
        let in_memory = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(decision_id)
            .cloned();
        match in_memory {
            Some(location) => Ok(Some(location)),
            None => {
                let mut sealed = segments(&self.dir)?;
                sealed.pop();
                index::lookup(&sealed, decision_id)
            }
        }
    }

    /// The proof that decision `decision_id`'s record is as written: the chain from it to the
    /// first signed checkpoint after it, checked against this ledger's key.
    pub fn proof(&self, decision_id: &str) -> Result<Option<Proof>, LedgerError> {
        match self.locate(decision_id)? {
            Some(location) => proof::prove(&location, &self.verifying).map(Some),
            None => Ok(None),
        }
    }

    /// The public key checkpoints verify with (hex), and its fingerprint (`key_id`).
    pub fn public_key(&self) -> (String, String) {
        (
            hex::encode(self.verifying.as_bytes()),
            key_id(&self.verifying),
        )
    }

    /// Up to `limit` records that match `filter`, in `order` (newest first from a sequence
    /// number, or oldest first after one), through the search index.
    pub fn find(
        &self,
        filter: &Filter,
        order: Order,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, LedgerError> {
        search::find(&self.dir, &self.terms, filter, order, limit)
    }

    /// Decisions by outcome in `buckets` buckets of `bucket_ms` up to `until`, and denials by
    /// reason, counted from the search index.
    pub fn activity(
        &self,
        until: UnixMillis,
        bucket_ms: i64,
        buckets: usize,
    ) -> Result<Activity, LedgerError> {
        search::activity(&self.dir, &self.terms, until.0, bucket_ms, buckets)
    }

    /// Calls `read` with the usage summary, up to the last batch written; `None` while it is
    /// still being read at start.
    pub fn usage<T>(&self, read: impl FnOnce(&Usage) -> T) -> Option<T> {
        self.usage.read(read)
    }

    /// Whether the usage summary has been read at start (`usage` then answers), without
    /// waiting for its lock.
    pub fn usage_ready(&self) -> bool {
        self.usage.ready()
    }

    /// Saves the usage summary now (at shutdown: the next start then reads no records again).
    pub fn save_usage(&self) {
        self.usage.save();
    }

    /// Appends records (one decision's, or a batch's). In durable mode this resolves once all
    /// are on disk; in async mode once they are queued.
    pub async fn append(&self, records: &[Record]) -> Result<(), LedgerError> {
        let stopped = || LedgerError::Unavailable("the ledger writer has stopped".into());
        if self.failed.load(Ordering::Relaxed) {
            return Err(LedgerError::Unavailable("an earlier write failed".into()));
        }
        let mut waits = Vec::new();
        for record in records {
            let decision_id = record.decision_id.clone();
            let bytes = canonical(record)
                .map_err(|e| LedgerError::Unavailable(format!("cannot serialise a record: {e}")))?;
            let (mut pending, wait) = self.pending_entry(Some(decision_id), "record", bytes);
            pending.seen = usage::Seen::of(record).map(Box::new);
            waits.extend(wait);
            // A full queue makes the caller wait: backpressure, never a dropped record.
            match self.sender.try_send(Message::Record(pending)) {
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

    /// Appends a step of an approval request from a thread that may block (the control
    /// plane's): in durable mode it returns once the entry is on disk, in async mode once it is
    /// queued.
    pub fn append_approval_request_blocking(
        &self,
        record: &ApprovalRequestRecord,
    ) -> Result<(), LedgerError> {
        self.append_entry_blocking("approval_request", record)
    }

    /// Appends a search from a thread that may block: in durable mode it returns once the entry
    /// is on disk, in async mode once it is queued.
    pub fn append_search_blocking(&self, record: &SearchRecord) -> Result<(), LedgerError> {
        self.append_entry_blocking("search", record)
    }

    /// Appends an entry other than a decision, under `key`.
    fn append_entry_blocking(
        &self,
        key: &'static str,
        record: &impl serde::Serialize,
    ) -> Result<(), LedgerError> {
        let stopped = || LedgerError::Unavailable("the ledger writer has stopped".into());
        if self.failed.load(Ordering::Relaxed) {
            return Err(LedgerError::Unavailable("an earlier write failed".into()));
        }
        let bytes = canonical_entry(record)
            .map_err(|e| LedgerError::Unavailable(format!("cannot serialise a record: {e}")))?;
        let (pending, wait) = self.pending_entry(None, key, bytes);
        self.sender
            .send(Message::Record(pending))
            .map_err(|_| stopped())?;
        match wait {
            Some(wait) => wait.blocking_recv().map_err(|_| stopped())?.map(|_| ()),
            None => Ok(()),
        }
    }

    /// An entry for the writer, counted as pending, and what to wait on in durable mode.
    fn pending_entry(
        &self,
        decision_id: Option<String>,
        key: &'static str,
        record: Vec<u8>,
    ) -> (Pending, Option<oneshot::Receiver<Result<u64, LedgerError>>>) {
        let (done, wait) = match self.mode == LedgerMode::Durable {
            true => {
                let (sender, receiver) = oneshot::channel();
                (Some(sender), Some(receiver))
            }
            false => (None, None),
        };
        self.pending.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            decision_id,
            key,
            record,
            seen: None,
            done,
        };
        (pending, wait)
    }
}

/// Scans the ledger from `start`, refusing a damaged one.
fn scan_sound(
    dir: &Path,
    key: &VerifyingKey,
    start: chain::Start<'_>,
) -> Result<chain::Scan, LedgerError> {
    chain::scan(dir, key, start, false)?.map_err(|damage| {
        LedgerError::Corrupt(format!(
            "the ledger in {} is damaged: {damage}; refusing to append to it",
            dir.display()
        ))
    })
}

/// Records after the last checkpoint when that checkpoint was signed with a durable batch
/// cannot be evidence: every durable batch is signed in the same write that stores it, so such
/// records were never acknowledged (a crash between the write and its signature) or were not
/// written by Warrant (appended by someone without the key). They are moved out of the chain
/// into `quarantine-<time>.jsonl` beside it, for inspection, and never signed. (After an async
/// checkpoint, records may have been acknowledged before they were written: they are kept and
/// signed by the next checkpoint, as the async mode documents.) `true` if anything was cut.
fn quarantine_unsigned_tail(dir: &Path, scan: &chain::Scan) -> Result<bool, LedgerError> {
    let signed_up_to = scan.last_checkpoint_seq.unwrap_or(0);
    let Some(first) = scan.entries.iter().find(|e| e.seq > signed_up_to) else {
        return Ok(false);
    };
    let place = &first.place;
    let unsigned = scan.entries.last().map_or(0, |e| e.seq) - signed_up_to;
    if !scan.last_checkpoint_batch {
        tracing::warn!(
            records = unsigned,
            "records after the last checkpoint are not signed (an async ledger, or one from \
             before batch signing); the next checkpoint signs them"
        );
        return Ok(false);
    }
    let quarantine = dir.join(format!(
        "quarantine-{}.jsonl",
        warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock).0
    ));
    let mut out = warrant_files::private_file()
        .write(true)
        .create_new(true)
        .open(&quarantine)
        .map_err(io_error(&quarantine))?;
    let mut cut_segments = Vec::new();
    for segment in segments(dir)? {
        if segment < place.segment {
            continue;
        }
        let bytes = std::fs::read(&segment).map_err(io_error(&segment))?;
        let from = if segment == place.segment {
            usize::try_from(place.offset).unwrap_or(usize::MAX)
        } else {
            0
        };
        out.write_all(bytes.get(from..).unwrap_or_default())
            .map_err(io_error(&quarantine))?;
        cut_segments.push((segment, from));
    }
    out.sync_all().map_err(io_error(&quarantine))?;
    for (segment, from) in cut_segments {
        if from == 0 {
            std::fs::remove_file(&segment).map_err(io_error(&segment))?;
        } else {
            let file = OpenOptions::new()
                .write(true)
                .open(&segment)
                .map_err(io_error(&segment))?;
            file.set_len(from as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_error(&segment))?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    tracing::error!(
        records = unsigned,
        first_seq = first.seq,
        quarantine = %quarantine.display(),
        "records after the last signed durable batch were never acknowledged or were not \
         written by Warrant; moved out of the ledger"
    );
    Ok(true)
}

/// The retention thread: at start and then every hour, archives what the retention settings no
/// longer keep into a new folder under `archive_dir`.
fn retain(dir: &Path, key: &VerifyingKey, retention: &Retention, archived: &AtomicU64) {
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            std::thread::sleep(Duration::from_secs(3600));
        }
        let now = warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock);
        let cut = Cut {
            before: retention.max_age.map(|age| {
                now.saturating_add_millis(-(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
            }),
            max_bytes: retention.max_bytes,
        };
        let to = retention
            .archive_dir
            .join(format!("ledger-archive-{}", now.0));
        match archive(dir, key, cut, &to) {
            Ok(Some(moved)) => {
                archived.fetch_add(moved.segments as u64, Ordering::Relaxed);
                tracing::info!(
                    segments = moved.segments,
                    first = moved.first,
                    last = moved.last,
                    to = %to.display(),
                    anchor = %format!("{}:{}", moved.anchor.checkpoint.seq, moved.anchor.checkpoint.head),
                    "retention archived old ledger segments"
                );
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "retention could not archive ledger segments"),
        }
    }
}
