//! The ledger's usage summary, what an access review reads instead of the records: for each
//! identity when it was first and last seen in a decision, how often it was allowed and
//! denied, with which actions, and when it was last caught replaying or presenting another's
//! credential; for each approval and each policy when it last allowed something and how often;
//! per-day counts (by identity type and outcome, denials by reason); and the newest attestation
//! of each identity and approval.
//!
//! The writer folds each batch in after writing it (one lock per batch, into `delta`); a
//! thread of its own merges `delta` into the whole and saves it beside the segments
//! (`usage.summary`, with the last sequence number it covers) at most every `SAVE_EVERY`, and
//! at close. On open the saved summary is read and brought up to date from the records it does
//! not cover, so it survives restarts; archiving segments leaves it whole. Bounded: at most
//! `max_entries` identities, approvals and policies (the rest are counted in `dropped`), and
//! `KEEP_DAYS` days of counts. Only known identities are kept (a decision on an unknown
//! principal names nothing to review).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use warrant_domain::Reason;
use warrant_domain::clock::UnixMillis;

use super::chain::{Line, SegmentLines, first_seq, segments};
use super::{LedgerError, Record, io_error};

const FILE: &str = "usage.summary";
const MAGIC: &[u8; 6] = b"WUSE\x00\x01";
/// How often the summary is saved while records arrive.
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Days of per-day counts kept.
pub const KEEP_DAYS: i64 = 400;
/// Actions kept per identity (the first seen; the rest are counted, not named).
const MAX_ACTIONS: usize = 64;
const DAY_MS: i64 = 86_400_000;
/// The actions whose allowed decisions are attestations.
pub const ATTEST_IDENTITY: &str = "attest_identity";
pub const ATTEST_APPROVAL: &str = "attest_approval";

/// What the summary takes from one decision record.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    principal: Box<str>,
    principal_type: Box<str>,
    /// The principal is an identity the facts held at the decision.
    identity: bool,
    action: Box<str>,
    allowed: bool,
    time: i64,
    /// The approval that allowed it.
    approval: Option<Box<str>>,
    /// An allow's determining policies; a deny's reasons.
    reasons: Vec<Box<str>>,
    /// An attestation: what it attests (`Type::id`, or an approval's id) and its verdict.
    attests: Option<(Box<str>, Box<str>)>,
}

impl Seen {
    pub(super) fn of(record: &Record) -> Option<Seen> {
        let time = UnixMillis::parse_rfc3339(&record.time)?.0;
        let allowed = record.decision.eq_ignore_ascii_case("allow");
        let attests = (allowed
            && (record.action == ATTEST_IDENTITY || record.action == ATTEST_APPROVAL))
            .then(|| {
                let target = match record.action.as_str() {
                    ATTEST_APPROVAL => record.resource.id.clone(),
                    _ => format!("{}::{}", record.resource.type_name, record.resource.id),
                };
                let verdict = record
                    .context
                    .get("verdict")
                    .and_then(|v| v.as_str())
                    .unwrap_or("confirm");
                (target.into(), verdict.into())
            });
        Some(Seen {
            principal: format!("{}::{}", record.principal.type_name, record.principal.id).into(),
            principal_type: record.principal.type_name.as_str().into(),
            identity: record.principal_status.is_some(),
            action: record.action.as_str().into(),
            allowed,
            time,
            approval: record
                .approval
                .as_ref()
                .filter(|a| allowed && a.valid_at_decision)
                .map(|a| a.id.as_str().into()),
            reasons: record.reasons.iter().map(|r| r.as_str().into()).collect(),
            attests,
        })
    }
}

/// One identity's decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityUse {
    pub first: i64,
    pub last: i64,
    pub last_allowed: Option<i64>,
    pub allowed: u64,
    pub denied: u64,
    /// Each action allowed, with when it last was.
    pub actions: Vec<(Box<str>, i64)>,
    /// Denials for an approval granted to another identity, or a single-use token presented
    /// again: how many, and the last.
    pub replays: u64,
    pub last_replay: Option<i64>,
    /// Denials for a credential naming another principal.
    pub mismatches: u64,
    pub last_mismatch: Option<i64>,
}

/// An approval's or a policy's allowed decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allows {
    pub count: u64,
    pub first: i64,
    pub last: i64,
}

/// One day's decisions (the day's start, Unix ms / 86,400,000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Day {
    /// By principal type: (allowed, denied).
    pub by_type: BTreeMap<Box<str>, (u64, u64)>,
    pub denied_by_reason: BTreeMap<Box<str>, u64>,
}

/// The newest attestation of an identity or approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The Human who attested, as `Human::id`.
    pub by: Box<str>,
    pub at: i64,
    /// `confirm` or `revoke`.
    pub verdict: Box<str>,
}

/// The summary of every decision up to `covers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// By `Type::id`.
    pub identities: HashMap<Box<str>, IdentityUse>,
    /// By approval id.
    pub approvals: HashMap<Box<str>, Allows>,
    /// By policy or link id: the allows it determined.
    pub policies: HashMap<Box<str>, Allows>,
    pub days: BTreeMap<i64, Day>,
    /// By `Type::id` for an identity, by id for an approval.
    pub attestations: HashMap<Box<str>, Attestation>,
    /// Decisions folded in, and the time of the first.
    pub decisions: u64,
    pub first: Option<i64>,
    /// The last sequence number folded in.
    pub covers: u64,
    /// Identities, approvals or policies not kept: past `max_entries`.
    pub dropped: u64,
}

fn is_policy(reason: &str) -> bool {
    !reason.starts_with("warrant:")
}

/// Changes `map`'s value for `key`: the one held, or a new one when there is `room` (the key
/// is allocated only then: most decisions are on what the summary already holds). `false` when
/// it is neither held nor has room.
fn held<V: Default>(
    map: &mut HashMap<Box<str>, V>,
    key: &str,
    room: bool,
    change: impl FnOnce(&mut V),
) -> bool {
    if let Some(value) = map.get_mut(key) {
        change(value);
        return true;
    }
    if room {
        change(map.entry(key.into()).or_default());
    }
    room
}

/// `held` for the per-day counts, which are always kept.
fn counted<V: Default>(map: &mut BTreeMap<Box<str>, V>, key: &str, change: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(value) => change(value),
        None => change(map.entry(key.into()).or_default()),
    }
}

fn stretch(allows: &mut Allows, time: i64) {
    if allows.count == 0 || time < allows.first {
        allows.first = time;
    }
    allows.last = allows.last.max(time);
    allows.count += 1;
}

impl Usage {
    fn entries(&self) -> usize {
        self.identities.len() + self.approvals.len() + self.policies.len()
    }

    /// Folds in one decision, the `seq`th record.
    pub(super) fn note(&mut self, seq: u64, seen: &Seen, max_entries: usize) {
        self.covers = self.covers.max(seq);
        self.decisions += 1;
        self.first = Some(self.first.map_or(seen.time, |f| f.min(seen.time)));
        let room = self.entries() < max_entries;
        let mut dropped = false;
        let day = self.days.entry(seen.time.div_euclid(DAY_MS)).or_default();
        let allowed = seen.allowed;
        counted(
            &mut day.by_type,
            &seen.principal_type,
            |counts| match allowed {
                true => counts.0 += 1,
                false => counts.1 += 1,
            },
        );
        if !allowed {
            for reason in &seen.reasons {
                counted(&mut day.denied_by_reason, reason, |count| *count += 1);
            }
        }
        if seen.identity {
            dropped |= !held(&mut self.identities, &seen.principal, room, |used| {
                note_identity(used, seen);
            });
        }
        if let Some(approval) = &seen.approval {
            dropped |= !held(&mut self.approvals, approval, room, |allows| {
                stretch(allows, seen.time);
            });
        }
        if allowed {
            for policy in seen.reasons.iter().filter(|r| is_policy(r)) {
                dropped |= !held(&mut self.policies, policy, room, |allows| {
                    stretch(allows, seen.time);
                });
            }
        }
        if let Some((target, verdict)) = &seen.attests {
            let newer = self
                .attestations
                .get(target)
                .is_none_or(|held| held.at <= seen.time);
            if newer {
                self.attestations.insert(
                    target.clone(),
                    Attestation {
                        by: seen.principal.clone(),
                        at: seen.time,
                        verdict: verdict.clone(),
                    },
                );
            }
        }
        self.dropped += u64::from(dropped);
        self.trim_days();
    }

    fn trim_days(&mut self) {
        let Some(&newest) = self.days.keys().next_back() else {
            return;
        };
        while self
            .days
            .first_key_value()
            .is_some_and(|(&day, _)| day <= newest - KEEP_DAYS)
        {
            self.days.pop_first();
        }
    }

    /// Takes in `later`, a summary of the records after this one's.
    fn merge(&mut self, later: Usage, max_entries: usize) {
        self.covers = self.covers.max(later.covers);
        self.decisions += later.decisions;
        self.first = match (self.first, later.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.dropped += later.dropped;
        for (key, used) in later.identities {
            let room = self.entries() < max_entries;
            match self.identities.get_mut(&key) {
                Some(held) => merge_identity(held, used),
                None if room => {
                    self.identities.insert(key, used);
                }
                None => self.dropped += 1,
            }
        }
        for (map, later) in [
            (&mut self.approvals, later.approvals),
            (&mut self.policies, later.policies),
        ] {
            for (key, allows) in later {
                let held = map.entry(key).or_default();
                if held.count == 0 || allows.first < held.first {
                    held.first = allows.first;
                }
                held.last = held.last.max(allows.last);
                held.count += allows.count;
            }
        }
        for (key, day) in later.days {
            let held = self.days.entry(key).or_default();
            for (kind, (allowed, denied)) in day.by_type {
                let counts = held.by_type.entry(kind).or_default();
                counts.0 += allowed;
                counts.1 += denied;
            }
            for (reason, count) in day.denied_by_reason {
                *held.denied_by_reason.entry(reason).or_default() += count;
            }
        }
        for (key, attestation) in later.attestations {
            if self
                .attestations
                .get(&key)
                .is_none_or(|held| held.at <= attestation.at)
            {
                self.attestations.insert(key, attestation);
            }
        }
        self.trim_days();
    }
}

fn note_identity(used: &mut IdentityUse, seen: &Seen) {
    if used.allowed + used.denied == 0 || seen.time < used.first {
        used.first = seen.time;
    }
    used.last = used.last.max(seen.time);
    if seen.allowed {
        used.allowed += 1;
        used.last_allowed = Some(used.last_allowed.map_or(seen.time, |t| t.max(seen.time)));
        note_action(&mut used.actions, &seen.action, seen.time);
    } else {
        used.denied += 1;
        let has = |reason: Reason| seen.reasons.iter().any(|r| &**r == reason.as_str());
        if has(Reason::ApprovalReplayed) || has(Reason::CredentialReplayed) {
            used.replays += 1;
            used.last_replay = Some(used.last_replay.map_or(seen.time, |t| t.max(seen.time)));
        }
        if has(Reason::CredentialMismatch) {
            used.mismatches += 1;
            used.last_mismatch = Some(used.last_mismatch.map_or(seen.time, |t| t.max(seen.time)));
        }
    }
}

/// Notes that `action` was allowed at `time` (a new action only while there is room).
fn note_action(actions: &mut Vec<(Box<str>, i64)>, action: &str, time: i64) {
    match actions.iter().position(|(a, _)| &**a == action) {
        Some(at) => actions[at].1 = actions[at].1.max(time),
        None if actions.len() < MAX_ACTIONS => actions.push((action.into(), time)),
        None => {}
    }
}

fn later_of(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

fn merge_identity(held: &mut IdentityUse, used: IdentityUse) {
    if held.allowed + held.denied == 0 || used.first < held.first {
        held.first = used.first;
    }
    held.last = held.last.max(used.last);
    held.last_allowed = later_of(held.last_allowed, used.last_allowed);
    held.allowed += used.allowed;
    held.denied += used.denied;
    for (action, last) in used.actions {
        note_action(&mut held.actions, &action, last);
    }
    held.replays += used.replays;
    held.last_replay = later_of(held.last_replay, used.last_replay);
    held.mismatches += used.mismatches;
    held.last_mismatch = later_of(held.last_mismatch, used.last_mismatch);
}

/// The summary as the ledger keeps it: what the writer has folded in since the last merge, the
/// whole as of that merge (absent until read from disk and brought up to date), and the thread
/// that saves it.
pub(super) struct UsageBook {
    dir: PathBuf,
    max_entries: usize,
    delta: Mutex<Usage>,
    whole: Mutex<Option<Usage>>,
    closing: AtomicBool,
    /// Set once `whole` has been read from disk and brought up to date.
    loaded: AtomicBool,
    /// `whole` holds decisions the saved file does not.
    unsaved: AtomicBool,
    /// As of the last merge: entries held, and entries not kept (for metrics).
    pub(super) entries: AtomicU64,
    pub(super) dropped: AtomicU64,
    wake: Condvar,
    wake_lock: Mutex<()>,
}

impl UsageBook {
    /// Starts the summary of the ledger in `dir`, whose writer's next record is `next_seq`:
    /// the saved summary is read, and the records it does not cover folded in, on a thread of
    /// its own, which then saves it every `SAVE_EVERY`.
    pub(super) fn start(
        dir: &Path,
        next_seq: u64,
        max_entries: usize,
    ) -> Result<Arc<UsageBook>, LedgerError> {
        let book = Arc::new(UsageBook {
            dir: dir.to_path_buf(),
            max_entries,
            delta: Mutex::new(Usage::default()),
            whole: Mutex::new(None),
            closing: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            unsaved: AtomicBool::new(false),
            entries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        });
        let running = Arc::clone(&book);
        std::thread::Builder::new()
            .name("ledger-usage".into())
            .spawn(move || running.run(next_seq))
            .map_err(|e| {
                LedgerError::Unavailable(format!("cannot start the usage summary: {e}"))
            })?;
        Ok(book)
    }

    /// Folds in a batch the writer wrote, its first record `first_seq`.
    pub(super) fn note_batch<'a>(
        &self,
        first_seq: u64,
        seen: impl Iterator<Item = Option<&'a Seen>>,
    ) {
        let mut delta = self.delta.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, seen) in seen.enumerate() {
            if let Some(seen) = seen {
                delta.note(first_seq + i as u64, seen, self.max_entries);
            }
        }
    }

    /// Calls `read` with the whole summary brought up to the last batch written; `None` while
    /// it is still being read from disk.
    pub(super) fn read<T>(&self, read: impl FnOnce(&Usage) -> T) -> Option<T> {
        let mut whole = self.whole.lock().unwrap_or_else(PoisonError::into_inner);
        let usage = whole.as_mut()?;
        self.merge_into(usage);
        Some(read(usage))
    }

    pub(super) fn ready(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Saves what is folded in, and stops the saving thread (the writer calls it as it stops).
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.save();
        self.wake.notify_all();
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn run(self: Arc<Self>, next_seq: u64) {
        let mut usage = match read_file(&self.path()) {
            Ok(Some(usage)) => usage,
            Ok(None) => Usage::default(),
            Err(error) => {
                tracing::warn!(%error, "the usage summary cannot be read: building it again from the records");
                Usage::default()
            }
        };
        if let Err(error) = fold_records(&self.dir, &mut usage, next_seq, self.max_entries) {
            tracing::error!(%error, "cannot bring the usage summary up to date from the records");
        }
        // What was read from the records is not in the file yet.
        self.unsaved.store(true, Ordering::SeqCst);
        *self.whole.lock().unwrap_or_else(PoisonError::into_inner) = Some(usage);
        self.loaded.store(true, Ordering::SeqCst);
        self.save();
        loop {
            let guard = self
                .wake_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let _ = self
                .wake
                .wait_timeout(guard, SAVE_EVERY)
                .unwrap_or_else(PoisonError::into_inner);
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            self.save();
        }
    }

    /// Merges what the writer folded in since the last merge into `usage` (which the file then
    /// lacks).
    fn merge_into(&self, usage: &mut Usage) {
        let delta = std::mem::take(&mut *self.delta.lock().unwrap_or_else(PoisonError::into_inner));
        if delta.decisions > 0 {
            self.unsaved.store(true, Ordering::SeqCst);
        }
        usage.merge(delta, self.max_entries);
        self.entries
            .store(usage.entries() as u64, Ordering::Relaxed);
        self.dropped.store(usage.dropped, Ordering::Relaxed);
    }

    /// Merges and writes the summary, if it has been read and anything changed since.
    pub(super) fn save(&self) {
        let mut whole = self.whole.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(usage) = whole.as_mut() else {
            return;
        };
        self.merge_into(usage);
        let changed = self.unsaved.swap(false, Ordering::SeqCst) || !self.path().exists();
        if changed && let Err(error) = write_file(&self.path(), usage) {
            self.unsaved.store(true, Ordering::SeqCst);
            tracing::error!(%error, "cannot save the usage summary (it is built again from the records at the next start)");
        }
    }
}

/// Folds in the records after `usage.covers` and before `next_seq`, from the segments that hold
/// them (archived ones are gone: what they held stays in the saved summary).
fn fold_records(
    dir: &Path,
    usage: &mut Usage,
    next_seq: u64,
    max_entries: usize,
) -> Result<(), LedgerError> {
    let all = segments(dir)?;
    let started = std::time::Instant::now();
    let mut folded = 0u64;
    for (at, segment) in all.iter().enumerate() {
        let ends_before = all
            .get(at + 1)
            .and_then(|next| first_seq(next))
            .is_some_and(|next| next <= usage.covers + 1);
        if ends_before {
            continue;
        }
        let mut lines = SegmentLines::open(segment, 0)?;
        while let Some((_, line)) = lines.next_line()? {
            if line.last() != Some(&b'\n') {
                break;
            }
            let Ok(Line::Entry { entry, .. }) = serde_json::from_slice::<Line>(line) else {
                continue;
            };
            if entry.seq <= usage.covers || entry.seq >= next_seq {
                continue;
            }
            let seq = entry.seq;
            if let Some(seen) = entry.record.as_deref().and_then(Seen::of) {
                usage.note(seq, &seen, max_entries);
                folded += 1;
            }
        }
    }
    if folded > 0 {
        tracing::info!(
            records = folded,
            seconds = started.elapsed().as_secs_f64(),
            "usage summary brought up to date from the ledger"
        );
    }
    Ok(())
}

// The file: MAGIC, then each part in turn. Numbers are little-endian; text is a u32 length and
// its bytes; an option is a byte (0 or 1) and its value.

struct Out<W: Write>(W);

impl<W: Write> Out<W> {
    fn u64(&mut self, n: u64) -> std::io::Result<()> {
        self.0.write_all(&n.to_le_bytes())
    }
    fn i64(&mut self, n: i64) -> std::io::Result<()> {
        self.0.write_all(&n.to_le_bytes())
    }
    fn opt(&mut self, n: Option<i64>) -> std::io::Result<()> {
        match n {
            Some(n) => {
                self.0.write_all(&[1])?;
                self.i64(n)
            }
            None => self.0.write_all(&[0]),
        }
    }
    fn text(&mut self, text: &str) -> std::io::Result<()> {
        let length = u32::try_from(text.len()).map_err(std::io::Error::other)?;
        self.0.write_all(&length.to_le_bytes())?;
        self.0.write_all(text.as_bytes())
    }
    fn allows(&mut self, map: &HashMap<Box<str>, Allows>) -> std::io::Result<()> {
        self.u64(map.len() as u64)?;
        for (key, allows) in map {
            self.text(key)?;
            self.u64(allows.count)?;
            self.i64(allows.first)?;
            self.i64(allows.last)?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, usage: &Usage) -> Result<(), LedgerError> {
    let temporary = path.with_extension("summary.tmp");
    let file = warrant_files::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    let mut out = Out(BufWriter::with_capacity(1 << 20, file));
    let written = (|| -> std::io::Result<()> {
        out.0.write_all(MAGIC)?;
        out.u64(usage.covers)?;
        out.u64(usage.decisions)?;
        out.opt(usage.first)?;
        out.u64(usage.dropped)?;
        out.u64(usage.identities.len() as u64)?;
        for (key, used) in &usage.identities {
            out.text(key)?;
            out.i64(used.first)?;
            out.i64(used.last)?;
            out.opt(used.last_allowed)?;
            out.u64(used.allowed)?;
            out.u64(used.denied)?;
            out.u64(used.actions.len() as u64)?;
            for (action, last) in &used.actions {
                out.text(action)?;
                out.i64(*last)?;
            }
            out.u64(used.replays)?;
            out.opt(used.last_replay)?;
            out.u64(used.mismatches)?;
            out.opt(used.last_mismatch)?;
        }
        out.allows(&usage.approvals)?;
        out.allows(&usage.policies)?;
        out.u64(usage.days.len() as u64)?;
        for (day, counts) in &usage.days {
            out.i64(*day)?;
            out.u64(counts.by_type.len() as u64)?;
            for (kind, (allowed, denied)) in &counts.by_type {
                out.text(kind)?;
                out.u64(*allowed)?;
                out.u64(*denied)?;
            }
            out.u64(counts.denied_by_reason.len() as u64)?;
            for (reason, count) in &counts.denied_by_reason {
                out.text(reason)?;
                out.u64(*count)?;
            }
        }
        out.u64(usage.attestations.len() as u64)?;
        for (key, attestation) in &usage.attestations {
            out.text(key)?;
            out.text(&attestation.by)?;
            out.i64(attestation.at)?;
            out.text(&attestation.verdict)?;
        }
        let file = out.0.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()
    })();
    written.map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))
}

struct In<R: Read>(R);

impl<R: Read> In<R> {
    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut bytes = [0u8; N];
        self.0.read_exact(&mut bytes)?;
        Ok(bytes)
    }
    fn u64(&mut self) -> std::io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn i64(&mut self) -> std::io::Result<i64> {
        Ok(i64::from_le_bytes(self.bytes()?))
    }
    fn opt(&mut self) -> std::io::Result<Option<i64>> {
        match self.bytes::<1>()? {
            [0] => Ok(None),
            [1] => Ok(Some(self.i64()?)),
            _ => Err(std::io::Error::other("a damaged option")),
        }
    }
    fn text(&mut self) -> std::io::Result<Box<str>> {
        let length = u32::from_le_bytes(self.bytes()?) as usize;
        if length > 1 << 20 {
            return Err(std::io::Error::other(
                "a text longer than any Warrant writes",
            ));
        }
        let mut bytes = vec![0u8; length];
        self.0.read_exact(&mut bytes)?;
        String::from_utf8(bytes)
            .map(String::into_boxed_str)
            .map_err(std::io::Error::other)
    }
    /// A count of items, none of which is smaller than a byte: no count beyond the file.
    fn count(&mut self) -> std::io::Result<usize> {
        usize::try_from(self.u64()?)
            .ok()
            .filter(|n| *n <= 1 << 34)
            .ok_or_else(|| std::io::Error::other("a damaged count"))
    }
    fn allows(&mut self) -> std::io::Result<HashMap<Box<str>, Allows>> {
        let count = self.count()?;
        let mut map = HashMap::with_capacity(count.min(1 << 20));
        for _ in 0..count {
            let key = self.text()?;
            let allows = Allows {
                count: self.u64()?,
                first: self.i64()?,
                last: self.i64()?,
            };
            map.insert(key, allows);
        }
        Ok(map)
    }
}

/// The saved summary, if there is one.
fn read_file(path: &Path) -> Result<Option<Usage>, LedgerError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path)(error)),
    };
    let mut input = In(BufReader::with_capacity(1 << 20, file));
    let read = (|| -> std::io::Result<Usage> {
        if &input.bytes::<6>()? != MAGIC {
            return Err(std::io::Error::other("not a usage summary of this version"));
        }
        let mut usage = Usage {
            covers: input.u64()?,
            decisions: input.u64()?,
            first: input.opt()?,
            dropped: input.u64()?,
            ..Usage::default()
        };
        let identities = input.count()?;
        usage.identities.reserve(identities.min(1 << 24));
        for _ in 0..identities {
            let key = input.text()?;
            let mut used = IdentityUse {
                first: input.i64()?,
                last: input.i64()?,
                last_allowed: input.opt()?,
                allowed: input.u64()?,
                denied: input.u64()?,
                ..IdentityUse::default()
            };
            for _ in 0..input.count()? {
                used.actions.push((input.text()?, input.i64()?));
            }
            used.replays = input.u64()?;
            used.last_replay = input.opt()?;
            used.mismatches = input.u64()?;
            used.last_mismatch = input.opt()?;
            usage.identities.insert(key, used);
        }
        usage.approvals = input.allows()?;
        usage.policies = input.allows()?;
        for _ in 0..input.count()? {
            let day = input.i64()?;
            let mut counts = Day::default();
            for _ in 0..input.count()? {
                let kind = input.text()?;
                counts.by_type.insert(kind, (input.u64()?, input.u64()?));
            }
            for _ in 0..input.count()? {
                let reason = input.text()?;
                counts.denied_by_reason.insert(reason, input.u64()?);
            }
            usage.days.insert(day, counts);
        }
        for _ in 0..input.count()? {
            let key = input.text()?;
            usage.attestations.insert(
                key,
                Attestation {
                    by: input.text()?,
                    at: input.i64()?,
                    verdict: input.text()?,
                },
            );
        }
        Ok(usage)
    })();
    read.map(Some)
        .map_err(|e| LedgerError::Corrupt(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(principal: &str, action: &str, allowed: bool, time: i64, reasons: &[&str]) -> Seen {
        Seen {
            principal: principal.into(),
            principal_type: principal.split("::").next().unwrap_or_default().into(),
            identity: true,
            action: action.into(),
            allowed,
            time,
            approval: allowed.then(|| "apr-1".into()),
            reasons: reasons.iter().map(|r| (*r).into()).collect(),
            attests: None,
        }
    }

    fn folded(all: &[Seen]) -> Usage {
        let mut usage = Usage::default();
        for (i, seen) in all.iter().enumerate() {
            usage.note(i as u64 + 1, seen, 1000);
        }
        usage
    }

    #[test]
    fn merging_two_halves_gives_the_whole_and_the_file_keeps_it() {
        let replayed = Reason::ApprovalReplayed.as_str();
        let all = vec![
            seen("Agent::a", "read", true, 5 * DAY_MS, &["p1"]),
            seen("Agent::b", "read", false, 6 * DAY_MS, &[replayed]),
            seen("Agent::a", "update", true, 7 * DAY_MS, &["link-1"]),
            seen(
                "ApiKey::k",
                "read",
                false,
                3 * DAY_MS,
                &["warrant:no-permitting-policy"],
            ),
        ];
        let whole = folded(&all);
        let mut first = folded(&all[..2]);
        let mut later = Usage::default();
        for (i, seen) in all[2..].iter().enumerate() {
            later.note(i as u64 + 3, seen, 1000);
        }
        first.merge(later, 1000);
        assert_eq!(first, whole);
        assert_eq!(whole.identities["Agent::b"].replays, 1);
        assert_eq!(whole.identities["Agent::a"].actions.len(), 2);
        assert_eq!(whole.policies["link-1"].count, 1);
        assert_eq!(whole.approvals["apr-1"].count, 2);
        assert_eq!(whole.first, Some(3 * DAY_MS));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        write_file(&path, &whole).unwrap();
        assert_eq!(read_file(&path).unwrap(), Some(whole));
        std::fs::write(&path, b"WUSE\x00\x01\xff").unwrap();
        assert!(read_file(&path).is_err());
    }

    #[test]
    fn past_the_bound_entries_are_counted_not_kept() {
        let mut usage = Usage::default();
        for i in 0..10 {
            let mut one = seen(&format!("Agent::a{i}"), "read", false, DAY_MS, &[]);
            one.approval = None;
            usage.note(i + 1, &one, 4);
        }
        assert_eq!(usage.identities.len(), 4);
        assert_eq!(usage.dropped, 6);
    }
}
