//! Streaming the ledger out, for a SIEM or a log shipper: every record after a cursor (its
//! sequence number) as one JSON line `{"hash","record","seq"}`, in order, optionally following
//! the ledger as it grows. A record is shipped once a signed checkpoint covers it, so nothing
//! leaves that a restart could quarantine (durable: with its own batch; async: at the next
//! checkpoint). The last `seq` a consumer shipped is its cursor: resuming with
//! `--after SEQ` gives exactly the records after it, none twice, none missed, across restarts of
//! either side.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::chain::{Line, SegmentLines, segments};
use super::{LedgerError, Recorded, io_error};

/// Where the export has read up to: a segment and the byte after its last complete line.
struct Position {
    segment: PathBuf,
    offset: u64,
}

/// Writes every record after `after` to `out`, one JSON line each. With `follow`, keeps
/// polling for new records every `poll` until `stop` says so; otherwise returns at the end.
/// Returns the last sequence number written (the cursor to resume from).
pub fn export(
    dir: &Path,
    after: u64,
    follow: Option<Duration>,
    out: &mut impl Write,
    stop: impl Fn() -> bool,
) -> Result<u64, LedgerError> {
    let mut cursor = after;
    let mut position: Option<Position> = None;
    // Records read but not yet covered by a checkpoint: (seq, line).
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
    loop {
        for segment in segments(dir)? {
            if let Some(at) = &position
                && segment < at.segment
            {
                continue;
            }
            let offset = match &position {
                Some(at) if at.segment == segment => at.offset,
                _ => 0,
            };
            let read = export_segment(&segment, offset, &mut pending, &mut cursor, out)?;
            position = Some(Position {
                segment,
                offset: read,
            });
        }
        out.flush()
            .map_err(|e| io_error(Path::new("<output>"))(e))?;
        let Some(poll) = follow else {
            return Ok(cursor);
        };
        if stop() {
            return Ok(cursor);
        }
        std::thread::sleep(poll);
    }
}

/// Reads the complete lines of `segment` from `offset`, exporting records as checkpoints cover
/// them; returns the offset after the last complete line (a line being written is left for the
/// next poll).
fn export_segment(
    segment: &Path,
    offset: u64,
    pending: &mut Vec<(u64, Vec<u8>)>,
    cursor: &mut u64,
    out: &mut impl Write,
) -> Result<u64, LedgerError> {
    let mut lines = SegmentLines::open(segment, offset)?;
    let mut at = offset;
    while let Some((start, line)) = lines.next_line()? {
        if line.last() != Some(&b'\n') {
            return Ok(start);
        }
        at = start + line.len() as u64;
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Entry { entry, hash, .. }) if entry.seq > *cursor => {
                let seq = entry.seq;
                // A decision as {"hash","record","seq"}; an approval request's step as
                // {"approval_request","hash","seq"}; a search as {"hash","search","seq"}.
                let line = match entry.recorded() {
                    Some(Recorded::Decision(record)) => {
                        serde_json::json!({"hash": hash, "record": record, "seq": seq})
                    }
                    Some(Recorded::ApprovalRequest(request)) => {
                        serde_json::json!({"approval_request": request, "hash": hash, "seq": seq})
                    }
                    Some(Recorded::Search(search)) => {
                        serde_json::json!({"hash": hash, "search": search, "seq": seq})
                    }
                    None => continue,
                };
                let mut bytes = serde_json::to_vec(&line).map_err(|e| {
                    LedgerError::Corrupt(format!(
                        "{}: cannot re-encode a record: {e}",
                        segment.display()
                    ))
                })?;
                bytes.push(b'\n');
                pending.push((seq, bytes));
            }
            Ok(Line::Checkpoint { checkpoint, .. }) => {
                let covered = pending.partition_point(|(seq, _)| *seq <= checkpoint.seq);
                for (seq, bytes) in pending.drain(..covered) {
                    out.write_all(&bytes)
                        .map_err(|e| io_error(Path::new("<output>"))(e))?;
                    *cursor = seq;
                }
            }
            _ => {}
        }
    }
    Ok(at)
}
