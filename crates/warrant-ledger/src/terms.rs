//! The search index of the decision log: for each segment, where each record is (offset,
//! length, sequence number, time) and, for each term a filter can ask (the principal, action,
//! resource, outcome, each reason, the approval presented and its ticket, a shadow
//! disagreement), the records that carry it. A sealed segment's index is kept beside it
//! (`segment-N.terms`), built the first time a search needs it; the active segment's grows as
//! searches read the lines appended since the last one. Nothing here is on the writer's path.
//! Indexes in memory are held within a byte budget (`TermsCache`), the least recently used
//! dropped first: a dropped sealed one is read back from its file.
//!
//! Index files are derived data: one that is missing or unreadable is built again from its
//! segment, and a search checks every record it returns against the whole filter, so an index
//! can only make a search faster, never change its answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use warrant_domain::clock::UnixMillis;

use super::chain::{Line, SegmentLines};
use super::{Filter, LedgerError, Record, Recorded, io_error};

const MAGIC: &[u8; 5] = b"WTRM\x01";

/// Where one record is, and when it was decided.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordAt {
    pub(super) offset: u64,
    pub(super) length: u32,
    pub(super) seq: u64,
    pub(super) time: i64,
}

/// One segment's index.
#[derive(Debug, Default)]
pub(super) struct SegmentTerms {
    pub(super) records: Vec<RecordAt>,
    postings: HashMap<Box<str>, Vec<u32>>,
    /// What was decided in each minute (by its start, Unix ms / 60,000), for the pictures.
    pub(super) minutes: std::collections::BTreeMap<i64, Minute>,
    /// How far into the segment it has read (the active segment's grows).
    read_to: u64,
}

/// One minute's decisions: allowed, denied, and the denials' reasons.
#[derive(Debug, Default, Clone)]
pub(super) struct Minute {
    pub(super) allowed: u64,
    pub(super) denied: u64,
    pub(super) deny_reasons: HashMap<Box<str>, u64>,
}

const MINUTE_MS: i64 = 60_000;

/// The index file of a segment.
pub(super) fn terms_path(segment: &Path) -> PathBuf {
    segment.with_extension("terms")
}

/// The terms a record carries (what `Filter::matches` can ask of it).
fn terms_of(record: &Record) -> Vec<String> {
    let mut terms = vec![
        format!("p:{}::{}", record.principal.type_name, record.principal.id),
        format!("a:{}", record.action),
        format!("r:{}::{}", record.resource.type_name, record.resource.id),
        format!("d:{}", record.decision.to_ascii_uppercase()),
    ];
    terms.extend(record.reasons.iter().map(|reason| format!("why:{reason}")));
    if let Some(presented) = &record.approval_presented {
        terms.push(format!("ap:{presented}"));
    }
    if let Some(approval) = &record.approval {
        terms.push(format!("ap:{}", approval.ticket));
    }
    if record
        .shadow
        .as_ref()
        .is_some_and(|shadow| !shadow.decision.eq_ignore_ascii_case(&record.decision))
    {
        terms.push("shadow:disagreed".to_owned());
    }
    terms.sort();
    terms.dedup();
    terms
}

/// The terms a filter asks for: every record it matches carries all of them.
pub(super) fn terms_asked(filter: &Filter) -> Vec<String> {
    let mut terms = Vec::new();
    if let Some(principal) = &filter.principal {
        terms.push(format!("p:{}::{}", principal.type_name, principal.id));
    }
    if let Some(action) = &filter.action {
        terms.push(format!("a:{action}"));
    }
    if let Some(resource) = &filter.resource {
        terms.push(format!("r:{}::{}", resource.type_name, resource.id));
    }
    if let Some(decision) = &filter.decision {
        terms.push(format!("d:{}", decision.to_ascii_uppercase()));
    }
    if let Some(reason) = &filter.reason {
        terms.push(format!("why:{reason}"));
    }
    if let Some(approval) = &filter.approval {
        terms.push(format!("ap:{approval}"));
    }
    if filter.shadow_disagreed {
        terms.push("shadow:disagreed".to_owned());
    }
    terms
}

impl SegmentTerms {
    /// Reads the lines appended since it last read (complete lines only).
    fn read_more(&mut self, segment: &Path) -> Result<(), LedgerError> {
        let mut lines = SegmentLines::open(segment, self.read_to)?;
        while let Some((offset, line)) = lines.next_line()? {
            if !line.ends_with(b"\n") {
                break;
            }
            self.read_to = offset + line.len() as u64;
            let Ok(Line::Entry { entry, .. }) = serde_json::from_slice::<Line>(line) else {
                continue;
            };
            let seq = entry.seq;
            let Some(Recorded::Decision(record)) = entry.recorded() else {
                continue;
            };
            let Ok(ordinal) = u32::try_from(self.records.len()) else {
                break;
            };
            let time = UnixMillis::parse_rfc3339(&record.time).map_or(0, |t| t.0);
            self.records.push(RecordAt {
                offset,
                length: u32::try_from(line.len()).unwrap_or(u32::MAX),
                seq,
                time,
            });
            let minute = self.minutes.entry(time.div_euclid(MINUTE_MS)).or_default();
            if record.decision.eq_ignore_ascii_case("allow") {
                minute.allowed += 1;
            } else {
                minute.denied += 1;
                for reason in &record.reasons {
                    *minute
                        .deny_reasons
                        .entry(reason.as_str().into())
                        .or_default() += 1;
                }
            }
            for term in terms_of(&record) {
                self.postings
                    .entry(term.into_boxed_str())
                    .or_default()
                    .push(ordinal);
            }
        }
        Ok(())
    }

    /// The ordinals of the records that carry every term (every record for none), ascending or,
    /// `newest_first`, descending: lazily, so a page stops reading at its limit. The shortest
    /// posting leads; each of its ordinals is looked up in the others.
    pub(super) fn matching<'a>(
        &'a self,
        terms: &[String],
        newest_first: bool,
    ) -> Box<dyn Iterator<Item = u32> + 'a> {
        let all = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        let Some(mut postings) = terms
            .iter()
            .map(|term| self.postings.get(term.as_str()).map(Vec::as_slice))
            .collect::<Option<Vec<&[u32]>>>()
        else {
            // A term no record carries.
            return Box::new(std::iter::empty());
        };
        postings.sort_by_key(|posting| posting.len());
        let Some((lead, rest)) = postings.split_first() else {
            return if newest_first {
                Box::new((0..all).rev())
            } else {
                Box::new(0..all)
            };
        };
        let (lead, rest) = (*lead, rest.to_vec());
        let carries_all =
            move |ordinal: &u32| rest.iter().all(|p| p.binary_search(ordinal).is_ok());
        if newest_first {
            Box::new(lead.iter().rev().copied().filter(carries_all))
        } else {
            Box::new(lead.iter().copied().filter(carries_all))
        }
    }

    /// The ordinals that carry `term`, ascending.
    pub(super) fn posting(&self, term: &str) -> &[u32] {
        self.postings.get(term).map_or(&[], Vec::as_slice)
    }

    /// Each term that starts with `prefix` (the prefix cut off) and its ordinals.
    pub(super) fn postings_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a [u32])> + 'a {
        self.postings.iter().filter_map(move |(term, posting)| {
            term.strip_prefix(prefix)
                .map(|rest| (rest, posting.as_slice()))
        })
    }

    /// What it holds in memory, roughly.
    fn bytes(&self) -> usize {
        self.minutes
            .values()
            .map(|minute| 96 + minute.deny_reasons.len() * 48)
            .sum::<usize>()
            + self.records.len() * std::mem::size_of::<RecordAt>()
            + self
                .postings
                .iter()
                .map(|(term, posting)| term.len() + posting.len() * 4 + 64)
                .sum::<usize>()
    }

    fn write(&self, path: &Path) -> Result<(), LedgerError> {
        let mut bytes = Vec::with_capacity(self.bytes() + 64);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.read_to.to_le_bytes());
        // Ordinals are u32 (`read_more` stops there), so the counts fit.
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        bytes.extend_from_slice(&count(self.records.len()));
        for at in &self.records {
            bytes.extend_from_slice(&at.offset.to_le_bytes());
            bytes.extend_from_slice(&at.length.to_le_bytes());
            bytes.extend_from_slice(&at.seq.to_le_bytes());
            bytes.extend_from_slice(&at.time.to_le_bytes());
        }
        bytes.extend_from_slice(&count(self.postings.len()));
        for (term, posting) in &self.postings {
            let term = term.as_bytes();
            let term = &term[..term.len().min(usize::from(u16::MAX))];
            bytes.extend_from_slice(&u16::try_from(term.len()).unwrap_or(u16::MAX).to_le_bytes());
            bytes.extend_from_slice(term);
            bytes.extend_from_slice(&count(posting.len()));
            for ordinal in posting {
                bytes.extend_from_slice(&ordinal.to_le_bytes());
            }
        }
        warrant_files::write_atomically(path, &bytes).map_err(io_error(path))
    }

    /// An index file as written; `None` if it is not one (it is then built again).
    fn read(bytes: &[u8]) -> Option<SegmentTerms> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = bytes.get(at..at.checked_add(n)?)?;
            at += n;
            Some(slice)
        };
        if take(MAGIC.len())? != MAGIC {
            return None;
        }
        let u64_of = |b: &[u8]| b.try_into().ok().map(u64::from_le_bytes);
        let u32_of = |b: &[u8]| b.try_into().ok().map(u32::from_le_bytes);
        let read_to = u64_of(take(8)?)?;
        let count = u32_of(take(4)?)? as usize;
        let mut records = Vec::with_capacity(count.min(bytes.len() / 28));
        for _ in 0..count {
            records.push(RecordAt {
                offset: u64_of(take(8)?)?,
                length: u32_of(take(4)?)?,
                seq: u64_of(take(8)?)?,
                time: i64::from_le_bytes(take(8)?.try_into().ok()?),
            });
        }
        let term_count = u32_of(take(4)?)? as usize;
        let mut postings = HashMap::with_capacity(term_count.min(bytes.len() / 8));
        for _ in 0..term_count {
            let length = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            let term = std::str::from_utf8(take(length)?).ok()?.into();
            let entries = u32_of(take(4)?)? as usize;
            let raw = take(entries.checked_mul(4)?)?;
            let posting: Vec<u32> = raw
                .chunks_exact(4)
                .filter_map(|chunk| chunk.try_into().ok().map(u32::from_le_bytes))
                .collect();
            postings.insert(term, posting);
        }
        let mut terms = SegmentTerms {
            records,
            postings,
            minutes: std::collections::BTreeMap::new(),
            read_to,
        };
        terms.count_minutes();
        Some(terms)
    }

    /// The minutes' counts, from the postings (for an index read from its file).
    fn count_minutes(&mut self) {
        let minute_of = |records: &[RecordAt], ordinal: &u32| {
            records
                .get(*ordinal as usize)
                .map(|at| at.time.div_euclid(MINUTE_MS))
        };
        let mut minutes: std::collections::BTreeMap<i64, Minute> = Default::default();
        for ordinal in self.posting("d:ALLOW") {
            if let Some(minute) = minute_of(&self.records, ordinal) {
                minutes.entry(minute).or_default().allowed += 1;
            }
        }
        let denied = self.posting("d:DENY");
        for ordinal in denied {
            if let Some(minute) = minute_of(&self.records, ordinal) {
                minutes.entry(minute).or_default().denied += 1;
            }
        }
        for (reason, posting) in self.postings_with_prefix("why:") {
            for ordinal in posting {
                if denied.binary_search(ordinal).is_ok()
                    && let Some(minute) = minute_of(&self.records, ordinal)
                {
                    *minutes
                        .entry(minute)
                        .or_default()
                        .deny_reasons
                        .entry(reason.into())
                        .or_default() += 1;
                }
            }
        }
        self.minutes = minutes;
    }
}

/// A sealed segment's per-minute summary, kept apart from its postings: a few entries per
/// minute it spans, so the pictures never need a segment's whole index in memory.
pub(super) type Minutes = Arc<std::collections::BTreeMap<i64, Minute>>;

/// The indexes held in memory, within a byte budget.
pub(super) struct TermsCache {
    budget: usize,
    held: Mutex<Held>,
    /// Sealed segments' summaries (small, and read by every page of the decision log).
    minutes: Mutex<HashMap<PathBuf, Minutes>>,
    /// When a search last used it: the indexer works only while people search.
    last_search: Mutex<Option<Instant>>,
}

/// How long after a search the indexer keeps the index current.
const FOLLOW_FOR: Duration = Duration::from_secs(600);
/// How often it catches up.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Keeps `dir`'s index current while people search (within `FOLLOW_FOR` of the last search):
/// builds the files of sealed segments that have none and reads what the writer appended to
/// the active one, so a search pays for at most `FOLLOW_EVERY` of new records. When nobody
/// searches it does nothing, so recording a decision costs nothing more. Ends with the cache.
pub(super) fn follow(dir: PathBuf, cache: std::sync::Weak<TermsCache>) {
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        let Some(cache) = cache.upgrade() else { return };
        let searched = cache
            .last_search
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < FOLLOW_FOR);
        if !searched {
            continue;
        }
        let Ok(all) = super::chain::segments(&dir) else {
            continue;
        };
        let last = all.len().saturating_sub(1);
        for (at, segment) in all.iter().enumerate() {
            let sealed = at != last;
            if sealed && terms_path(segment).exists() {
                continue;
            }
            if let Err(error) = cache.terms(segment, sealed) {
                tracing::warn!(%error, segment = %segment.display(), "cannot index a ledger segment");
            }
        }
    }
}

#[derive(Default)]
struct Held {
    by_segment: HashMap<PathBuf, Kept>,
    /// A counter for least-recently-used order.
    clock: u64,
}

/// A segment's index in memory, when it was last used, and its size as of its last change.
struct Kept {
    terms: Arc<RwLock<SegmentTerms>>,
    used: u64,
    bytes: usize,
}

impl TermsCache {
    pub(super) fn new(budget: usize) -> Self {
        TermsCache {
            budget,
            held: Mutex::new(Held::default()),
            minutes: Mutex::new(HashMap::new()),
            last_search: Mutex::new(None),
        }
    }

    /// `segment`'s per-minute summary: a sealed segment's is kept once read; the active one's
    /// is read from its index, brought up to date.
    pub(super) fn minutes(&self, segment: &Path, sealed: bool) -> Result<Minutes, LedgerError> {
        if sealed
            && let Some(minutes) = self
                .minutes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(segment)
        {
            return Ok(Arc::clone(minutes));
        }
        let terms = self.terms(segment, sealed)?;
        let minutes: Minutes = Arc::new(
            terms
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .minutes
                .clone(),
        );
        if sealed {
            let mut held = self
                .minutes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Segments archived away leave their summaries behind: drop those.
            held.retain(|path, _| path.exists());
            held.insert(segment.to_path_buf(), Arc::clone(&minutes));
        }
        Ok(minutes)
    }

    /// A search is about to use it.
    pub(super) fn searched(&self) {
        *self
            .last_search
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes held now (for the metrics).
    pub(super) fn bytes(&self) -> usize {
        self.held().by_segment.values().map(|kept| kept.bytes).sum()
    }

    /// `segment`'s index, complete up to the segment's last whole line. `sealed`: the writer
    /// has left it, so its index is kept in a file.
    pub(super) fn terms(
        &self,
        segment: &Path,
        sealed: bool,
    ) -> Result<Arc<RwLock<SegmentTerms>>, LedgerError> {
        let found = {
            let mut held = self.held();
            held.clock += 1;
            let now = held.clock;
            held.by_segment.get_mut(segment).map(|kept| {
                kept.used = now;
                Arc::clone(&kept.terms)
            })
        };
        let terms = match found {
            Some(terms) => terms,
            None => {
                let loaded = if sealed {
                    std::fs::read(terms_path(segment))
                        .ok()
                        .and_then(|bytes| SegmentTerms::read(&bytes))
                        .unwrap_or_default()
                } else {
                    SegmentTerms::default()
                };
                let bytes = loaded.bytes();
                let terms = Arc::new(RwLock::new(loaded));
                self.keep(segment, Arc::clone(&terms), bytes);
                terms
            }
        };
        let length = std::fs::metadata(segment).map_err(io_error(segment))?.len();
        let behind = terms
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read_to
            < length;
        // A sealed segment's index goes to its file once complete (the active segment's index
        // is complete when the writer leaves it, and written at its next use).
        let unwritten = sealed && (behind || !terms_path(segment).exists());
        if behind || unwritten {
            let mut writing = terms
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            writing.read_more(segment)?;
            if sealed && writing.read_to >= length {
                writing.write(&terms_path(segment))?;
            }
            let bytes = writing.bytes();
            drop(writing);
            self.keep(segment, Arc::clone(&terms), bytes);
            self.trim();
        }
        Ok(terms)
    }

    /// Holds `terms` for `segment` (again, after it changed), as just used.
    fn keep(&self, segment: &Path, terms: Arc<RwLock<SegmentTerms>>, bytes: usize) {
        let mut held = self.held();
        held.clock += 1;
        let used = held.clock;
        held.by_segment
            .insert(segment.to_path_buf(), Kept { terms, used, bytes });
    }

    /// Drops the least recently used indexes past the budget (never the last one left).
    fn trim(&self) {
        let mut held = self.held();
        let mut total: usize = held.by_segment.values().map(|kept| kept.bytes).sum();
        while total > self.budget && held.by_segment.len() > 1 {
            let Some(oldest) = held
                .by_segment
                .iter()
                .min_by_key(|(_, kept)| kept.used)
                .map(|(path, _)| path.clone())
            else {
                break;
            };
            if let Some(kept) = held.by_segment.remove(&oldest) {
                total = total.saturating_sub(kept.bytes);
            }
        }
    }
}
