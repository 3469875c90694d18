//! The on-disk lookup index: for each sealed segment (one the writer has moved on from), a file
//! beside it (`segment-N.idx`) of fixed-size entries sorted by decision id: the id's 16 bytes,
//! the record's byte offset and length. A lookup is a binary search in each index file whose id
//! range can hold the id, so memory does not grow with the ledger; only the active segment's
//! records are indexed in memory. Index files are derived data: a missing or unreadable one is
//! rebuilt from its segment.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::chain::{Line, SegmentLines};
use super::{LedgerError, Location, io_error};

/// id (16) + offset (8) + length (4).
const ENTRY_LEN: usize = 28;
const ENTRY_BYTES: u64 = ENTRY_LEN as u64;

/// The index file of a segment.
pub(super) fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// Writes the index of `segment` from its records' locations (in any order), atomically.
pub(super) fn write_index(
    segment: &Path,
    mut entries: Vec<(Uuid, u64, u32)>,
) -> Result<(), LedgerError> {
    entries.sort_unstable_by_key(|(id, _, _)| *id);
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for (id, offset, length) in entries {
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&offset.to_le_bytes());
        bytes.extend_from_slice(&length.to_le_bytes());
    }
    let path = index_path(segment);
    warrant_files::write_atomically(&path, &bytes).map_err(io_error(&path))
}

/// Reads a segment's records' locations (for an index that is missing).
pub(super) fn build_index(segment: &Path) -> Result<(), LedgerError> {
    let mut lines = SegmentLines::open(segment, 0)?;
    let mut entries = Vec::new();
    while let Some((offset, line)) = lines.next_line()? {
        if let Ok(Line::Entry { entry, .. }) = serde_json::from_slice::<Line>(line)
            && let Some(record) = &entry.record
            && let Ok(id) = Uuid::parse_str(&record.decision_id)
        {
            entries.push((id, offset, u32::try_from(line.len()).unwrap_or(u32::MAX)));
        }
    }
    write_index(segment, entries)
}

/// Where the record of decision `id` is, searching the index files of `sealed` segments
/// (newest first: a lookup is most often for a recent decision).
pub(super) fn lookup(sealed: &[PathBuf], id: &str) -> Result<Option<Location>, LedgerError> {
    let Ok(id) = Uuid::parse_str(id) else {
        return Ok(None);
    };
    for segment in sealed.iter().rev() {
        let path = index_path(segment);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                build_index(segment)?;
                File::open(&path).map_err(io_error(&path))?
            }
            Err(error) => return Err(io_error(&path)(error)),
        };
        let count = file.metadata().map_err(io_error(&path))?.len() / ENTRY_BYTES;
        let (mut low, mut high) = (0u64, count);
        let mut entry = [0u8; ENTRY_LEN];
        while low < high {
            let middle = low + (high - low) / 2;
            file.seek(SeekFrom::Start(middle * ENTRY_BYTES))
                .and_then(|_| file.read_exact(&mut entry))
                .map_err(io_error(&path))?;
            let found = Uuid::from_slice(&entry[..16]).unwrap_or_default();
            match found.cmp(&id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    let mut offset = [0u8; 8];
                    offset.copy_from_slice(&entry[16..24]);
                    let mut length = [0u8; 4];
                    length.copy_from_slice(&entry[24..28]);
                    return Ok(Some(Location {
                        segment: std::sync::Arc::new(segment.clone()),
                        offset: u64::from_le_bytes(offset),
                        length: u64::from(u32::from_le_bytes(length)),
                    }));
                }
            }
        }
    }
    Ok(None)
}
