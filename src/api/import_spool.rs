//! An import as it arrives, spooled to a file in the data folder instead of memory, then read
//! back one JSON line at a time while the facts store takes it: the server's memory does not
//! grow with the size of an import (at most `max_import_bytes` of disk, for the length of the
//! call). The file is removed when the import ends, and any a crash left is removed at start.

use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::Status;
use warrant_control::ControlError;
use warrant_control::entities::ChangeReason;
use warrant_proto as proto;

/// The folder under the data folder that holds imports on their way in.
const FOLDER: &str = "imports";

/// How far the reading back has come, for the caller's progress.
#[derive(Default)]
pub struct ImportProgress {
    pub bytes_read: AtomicU64,
    pub entities: AtomicU64,
}

/// An import written to its file (removed when this is dropped), with what its first messages
/// said.
pub struct ImportSpool {
    file: tempfile::NamedTempFile,
    pub bytes: u64,
    pub reason: ChangeReason,
    pub unchecked: bool,
}

impl ImportSpool {
    /// Removes what a crash left in `data_dir`'s spool folder.
    pub fn clean(data_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(data_dir.join(FOLDER)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Writes the stream's bytes to a new file under `data_dir`, refusing more than `max_bytes`.
    pub async fn receive(
        data_dir: &Path,
        mut stream: tonic::Streaming<proto::ImportFactsRequest>,
        max_bytes: u64,
        reason_of: impl Fn(Option<proto::EntityRef>, String) -> ChangeReason,
    ) -> Result<ImportSpool, Status> {
        let folder = data_dir.join(FOLDER);
        let unavailable = |error: std::io::Error| {
            Status::unavailable(format!(
                "cannot spool the import in {}: {error}",
                folder.display()
            ))
        };
        std::fs::create_dir_all(&folder).map_err(unavailable)?;
        let file = tempfile::Builder::new()
            .prefix("import-")
            .suffix(".jsonl")
            .tempfile_in(&folder)
            .map_err(unavailable)?;
        let mut out = BufWriter::with_capacity(1 << 20, file.reopen().map_err(unavailable)?);
        let mut spool = ImportSpool {
            file,
            bytes: 0,
            reason: ChangeReason::default(),
            unchecked: false,
        };
        let mut first = true;
        let mut reason = None;
        while let Some(message) = stream.message().await? {
            if first {
                spool.unchecked = message.unchecked;
                first = false;
            }
            spool.bytes = spool.bytes.saturating_add(message.data.len() as u64);
            if spool.bytes > max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "the import is larger than max_import_bytes ({max_bytes})"
                )));
            }
            if reason.is_none()
                && (message.requester.is_some() || !message.justification.is_empty())
            {
                reason = Some(reason_of(message.requester, message.justification));
            }
            out.write_all(&message.data).map_err(unavailable)?;
        }
        out.flush().map_err(unavailable)?;
        spool.reason = reason.unwrap_or_default();
        Ok(spool)
    }

    /// The import's entities in order, each with its line number; a line that is not JSON is
    /// an error naming it. Blank lines are skipped. `progress` counts what was read.
    pub fn entities(
        &self,
        progress: Arc<ImportProgress>,
    ) -> Result<
        impl Iterator<Item = Result<(usize, serde_json::Value), ControlError>> + use<>,
        Status,
    > {
        let file = self.file.reopen().map_err(|error| {
            Status::unavailable(format!("cannot read the spooled import: {error}"))
        })?;
        let mut lines = BufReader::with_capacity(1 << 20, file)
            .split(b'\n')
            .enumerate();
        Ok(std::iter::from_fn(move || {
            loop {
                let (index, line) = lines.next()?;
                let number = index + 1;
                let line = match line {
                    Ok(line) => {
                        let read = line.len() as u64 + 1;
                        progress.bytes_read.fetch_add(read, Ordering::Relaxed);
                        line
                    }
                    Err(error) => {
                        return Some(Err(ControlError::Invalid {
                            field: format!("line {number}"),
                            message: format!("cannot be read back from the spool: {error}"),
                        }));
                    }
                };
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                progress.entities.fetch_add(1, Ordering::Relaxed);
                return Some(
                    serde_json::from_slice(&line)
                        .map(|value| (number, value))
                        .map_err(|error| ControlError::Invalid {
                            field: format!("line {number}"),
                            message: format!("not JSON: {error}"),
                        }),
                );
            }
        }))
    }
}
