//! Searching the decision log through its index (`terms`): the records a filter matches,
//! newest first (for people: the console, `warrant log search`) or oldest first after a
//! sequence number (the `ListDecisions` API's pages). Each segment's index gives the records
//! that carry every term the filter asks; only those are read from the segment, and each is
//! checked against the whole filter before it is returned. A page stops at its limit.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::chain::{Line, first_seq, segments};
use super::terms::{TermsCache, terms_asked};
use super::{Filter, LedgerError, Recorded, StoredRecord, io_error};

/// Which way a page goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first, from before this sequence number (from the newest for `None`).
    NewestFirst { before: Option<u64> },
    /// Oldest first, after this sequence number (0: from the first).
    OldestFirst { after: u64 },
}

impl Order {
    fn wants(self, seq: u64) -> bool {
        match self {
            Order::NewestFirst { before } => before.is_none_or(|before| seq < before),
            Order::OldestFirst { after } => seq > after,
        }
    }
}

pub(super) fn find(
    dir: &Path,
    cache: &TermsCache,
    filter: &Filter,
    order: Order,
    limit: usize,
) -> Result<Vec<StoredRecord>, LedgerError> {
    let mut found = Vec::new();
    cache.searched();
    let all = segments(dir)?;
    let Some(last) = all.len().checked_sub(1) else {
        return Ok(found);
    };
    let terms = terms_asked(filter);
    let (since, until) = (filter.since.map(|t| t.0), filter.until.map(|t| t.0));
    let mut visit: Vec<usize> = (0..all.len()).collect();
    if matches!(order, Order::NewestFirst { .. }) {
        visit.reverse();
    }
    for at in visit {
        if found.len() >= limit {
            break;
        }
        let segment = &all[at];
        // Segments are named by their first sequence number.
        let skip = match order {
            Order::NewestFirst {
                before: Some(before),
            } => first_seq(segment).is_some_and(|first| first >= before),
            Order::OldestFirst { after } => all
                .get(at + 1)
                .and_then(|next| first_seq(next))
                .is_some_and(|next_first| next_first <= after + 1),
            Order::NewestFirst { before: None } => false,
        };
        if skip {
            continue;
        }
        let index = cache.terms(segment, at != last)?;
        let index = index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let candidates = index.matching(&terms, matches!(order, Order::NewestFirst { .. }));
        let mut file: Option<File> = None;
        for ordinal in candidates {
            let Some(place) = index.records.get(ordinal as usize) else {
                continue;
            };
            if !order.wants(place.seq)
                || since.is_some_and(|since| place.time < since)
                || until.is_some_and(|until| place.time >= until)
            {
                continue;
            }
            let file = match &mut file {
                Some(file) => file,
                None => file.insert(File::open(segment).map_err(io_error(segment))?),
            };
            let mut line = vec![0; place.length as usize];
            file.seek(SeekFrom::Start(place.offset))
                .and_then(|_| file.read_exact(&mut line))
                .map_err(io_error(segment))?;
            let Ok(Line::Entry { entry, hash, .. }) = serde_json::from_slice::<Line>(&line) else {
                continue;
            };
            let seq = entry.seq;
            if let Some(Recorded::Decision(record)) = entry.recorded()
                && filter.matches(&record)
            {
                found.push(StoredRecord {
                    seq,
                    hash,
                    record: *record,
                });
                if found.len() >= limit {
                    break;
                }
            }
        }
    }
    Ok(found)
}

/// What was decided in a window of time, for the console's pictures: decisions per bucket by
/// outcome, and denials by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Each bucket's start (Unix ms), allows and denies, oldest first.
    pub buckets: Vec<(i64, u64, u64)>,
    /// Denials by reason, most first.
    pub deny_reasons: Vec<(String, u64)>,
}

/// Counts from the index alone (no record is read): `buckets` buckets of `bucket_ms` ending at
/// `until`.
pub(super) fn activity(
    dir: &Path,
    cache: &TermsCache,
    until: i64,
    bucket_ms: i64,
    buckets: usize,
) -> Result<Activity, LedgerError> {
    let bucket_ms = bucket_ms.max(1);
    let since = until - bucket_ms * buckets as i64;
    let mut counts = vec![(0u64, 0u64); buckets];
    let mut reasons: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    cache.searched();
    let all = segments(dir)?;
    let last = all.len().saturating_sub(1);
    // Minutes are counted by their start: those that start in the window.
    let first_minute = since.div_euclid(60_000) + i64::from(since.rem_euclid(60_000) != 0);
    for (at, segment) in all.iter().enumerate().rev() {
        let minutes = cache.minutes(segment, at != last)?;
        for (minute, decided) in minutes.range(first_minute..) {
            let start = minute * 60_000;
            if start >= until {
                break;
            }
            let bucket = usize::try_from((start - since) / bucket_ms).unwrap_or(usize::MAX);
            if let Some((allows, denies)) = counts.get_mut(bucket) {
                *allows += decided.allowed;
                *denies += decided.denied;
            }
            for (reason, count) in &decided.deny_reasons {
                *reasons.entry(reason.to_string()).or_default() += count;
            }
        }
        // Segments are in time order: one that starts before the window is the last to read.
        if minutes
            .keys()
            .next()
            .is_some_and(|first| first * 60_000 < since)
        {
            break;
        }
    }
    let mut deny_reasons: Vec<(String, u64)> = reasons.into_iter().collect();
    deny_reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Activity {
        buckets: counts
            .into_iter()
            .enumerate()
            .map(|(i, (allows, denies))| (since + bucket_ms * i as i64, allows, denies))
            .collect(),
        deny_reasons,
    })
}
