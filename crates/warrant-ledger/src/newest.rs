//! The decision log newest first, as a person reads it (the console): segments from the last
//! back, each read forward, keeping only the last `limit` matches of each, so memory is bounded
//! by the page, not by the ledger. It stops at the first segment that fills the page.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::chain::{Line, first_seq, segments};
use super::{Filter, LedgerError, Recorded, StoredRecord, io_error};

pub(super) fn newest(
    dir: &Path,
    filter: &Filter,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<StoredRecord>, LedgerError> {
    let mut found: Vec<StoredRecord> = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    for path in segments(dir)?.into_iter().rev() {
        // Segments are named by their first sequence number.
        if before.is_some_and(|before| first_seq(&path).is_some_and(|first| first >= before)) {
            continue;
        }
        let wanted = limit - found.len();
        let mut kept: VecDeque<StoredRecord> = VecDeque::with_capacity(wanted.min(1024));
        let file = File::open(&path).map_err(io_error(&path))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io_error(&path))?;
            let Ok(Line::Entry { entry, hash, .. }) = serde_json::from_str::<Line>(&line) else {
                continue;
            };
            let seq = entry.seq;
            if before.is_some_and(|before| seq >= before) {
                break;
            }
            if let Some(Recorded::Decision(record)) = entry.recorded()
                && filter.matches(&record)
            {
                if kept.len() == wanted {
                    kept.pop_front();
                }
                kept.push_back(StoredRecord {
                    seq,
                    hash,
                    record: *record,
                });
            }
        }
        found.extend(kept.into_iter().rev());
        if found.len() >= limit {
            break;
        }
    }
    Ok(found)
}
