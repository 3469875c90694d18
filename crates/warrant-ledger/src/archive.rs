//! Moving old evidence out: sealed segments whose every record is older than a time go to an
//! archive folder, which verifies on its own (its own head, and the anchor it started from) and
//! joined with the ledger; the ledger keeps the signed checkpoint at the cut as its anchor and
//! starts and verifies from it.

use std::fs::File;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::chain::{Line, SegmentLines, SignedHead, read_checkpoint_file, segments};
use super::{ANCHOR_FILE, HEAD_FILE, LedgerError, io_error};
use warrant_domain::clock::UnixMillis;

/// What an archiving moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub segments: usize,
    /// The records moved: sequence numbers `first..=last`.
    pub first: u64,
    pub last: u64,
    /// The checkpoint at the cut, now the ledger's anchor and the archive's head.
    pub anchor: SignedHead,
}

/// A sealed segment's last record (its sequence number and time) and its last line, if that is
/// a checkpoint covering that record (a clean place to cut).
fn segment_end(segment: &Path) -> Result<Option<(u64, u64, String, SignedHead)>, LedgerError> {
    let mut lines = SegmentLines::open(segment, 0)?;
    let mut first = None;
    let mut last_entry: Option<(u64, String)> = None;
    let mut last_checkpoint = None;
    while let Some((_, line)) = lines.next_line()? {
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Entry { entry, .. }) => {
                first.get_or_insert(entry.seq);
                let seq = entry.seq;
                let time = entry.recorded().map(|r| r.time().to_owned());
                last_entry = Some((seq, time.unwrap_or_default()));
                last_checkpoint = None;
            }
            Ok(Line::Checkpoint {
                checkpoint,
                signature,
            }) => {
                last_checkpoint = Some(SignedHead {
                    checkpoint,
                    signature,
                });
            }
            Err(_) => return Ok(None),
        }
    }
    match (first, last_entry, last_checkpoint) {
        (Some(first), Some((seq, time)), Some(signed)) if signed.checkpoint.seq == seq => {
            Ok(Some((first, seq, time, signed)))
        }
        _ => Ok(None),
    }
}

/// Which sealed segments to move: those whose records are all before a time, and/or the oldest
/// until the ledger's files take no more than a number of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    pub before: Option<UnixMillis>,
    pub max_bytes: Option<u64>,
}

/// Moves the oldest sealed segments the cut selects, and that end on a signed checkpoint, to
/// `to/ledger/`. The cut's checkpoint becomes the ledger's anchor (written
/// before anything is removed, so a crash midway leaves copies, never a gap). `None` when no
/// segment qualifies.
pub fn archive(
    dir: &Path,
    key: &VerifyingKey,
    select: Cut,
    to: &Path,
) -> Result<Option<Archived>, LedgerError> {
    let mut sealed = segments(dir)?;
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let mut remaining: u64 = sealed.iter().map(|s| size(s)).sum();
    // The last segment is the one being written.
    sealed.pop();
    let mut moving: Vec<PathBuf> = Vec::new();
    let mut cut: Option<(u64, u64, SignedHead)> = None;
    for segment in sealed {
        let Some((first, last, time, signed)) = segment_end(&segment)? else {
            break;
        };
        let old = select
            .before
            .is_some_and(|before| UnixMillis::parse_rfc3339(&time).is_some_and(|t| t < before));
        let over = select.max_bytes.is_some_and(|max| remaining > max);
        if !old && !over {
            break;
        }
        remaining = remaining.saturating_sub(size(&segment));
        cut = Some((cut.as_ref().map_or(first, |c| c.0), last, signed));
        moving.push(segment);
    }
    let Some((first, last, anchor)) = cut else {
        return Ok(None);
    };
    if let Some(Err(problem)) = read_checkpoint_file(&dir.join(ANCHOR_FILE), key)? {
        return Err(LedgerError::Corrupt(format!(
            "the ledger's anchor: {problem}"
        )));
    }
    let target = to.join("ledger");
    warrant_files::private_dir(&target).map_err(io_error(&target))?;
    let copy = |from: &Path| -> Result<(), LedgerError> {
        let name = from.file_name().unwrap_or_default();
        std::fs::copy(from, target.join(name)).map_err(io_error(from))?;
        File::open(target.join(name))
            .and_then(|f| f.sync_all())
            .map_err(io_error(&target))
    };
    for segment in &moving {
        copy(segment)?;
        let index = super::index::index_path(segment);
        if index.exists() {
            copy(&index)?;
        }
    }
    // The archive's own anchor is the ledger's current one (where this archive starts); its
    // head is the cut.
    if dir.join(ANCHOR_FILE).exists() {
        copy(&dir.join(ANCHOR_FILE))?;
    }
    write_checkpoint_file(&target.join(HEAD_FILE), &anchor)?;
    write_checkpoint_file(&dir.join(ANCHOR_FILE), &anchor)?;
    for segment in &moving {
        std::fs::remove_file(segment).map_err(io_error(segment))?;
        let index = super::index::index_path(segment);
        if index.exists() {
            std::fs::remove_file(&index).map_err(io_error(&index))?;
        }
        // The search index is built again where it is needed (an archive is searched by
        // `warrant log search --data-dir` on it).
        let terms = super::terms::terms_path(segment);
        if terms.exists() {
            std::fs::remove_file(&terms).map_err(io_error(&terms))?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(Some(Archived {
        segments: moving.len(),
        first,
        last,
        anchor,
    }))
}

/// Writes one signed checkpoint line to `path`, atomically.
fn write_checkpoint_file(path: &Path, signed: &SignedHead) -> Result<(), LedgerError> {
    let bytes = super::chain::checkpoint_line(signed);
    warrant_files::write_atomically(path, &bytes).map_err(io_error(path))
}
