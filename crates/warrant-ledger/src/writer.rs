//! The writer thread: takes canonical records from the queue in batches, chains them, writes each
//! batch with one write and (in durable mode) one fsync, signs checkpoints, keeps the index.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, mpsc};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};

use super::chain::{SignedHead, chain_hash, checkpoint_bytes, checkpoint_line, write_entry};
use super::*;

/// How long an async batch gathers records after its first: what a crash may lose beyond the
/// queue is at most this much more.
const ASYNC_GATHER: Duration = Duration::from_micros(500);

/// How far ahead of its records a durable writer lays zeros in its segment. Each batch then
/// overwrites blocks the file already has, so its fdatasync flushes data without growing the file
/// (on this project's test machine, ext4: p50 150 us instead of 220 us for a 1.7 KiB record).
/// The batch that lays them waits for their flush too: a quarter of a MiB keeps that short.
/// Readers stop at the first NUL (`chain::SegmentLines`); a segment the writer leaves, and the
/// live one when it stops, are cut back to their records.
const PREALLOCATE: u64 = 256 * 1024;

/// Zeros to lay ahead of the records, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

pub(super) struct Writer {
    pub(super) written: Arc<AtomicU64>,
    pub(super) index: Index,
    pub(super) dir: PathBuf,
    pub(super) segment: Option<File>,
    pub(super) segment_path: Option<PathBuf>,
    /// The open segment's length, kept here rather than asked of the file on every batch: where
    /// its records end.
    pub(super) segment_len: u64,
    /// The open segment's length on disk, zeros laid ahead of its records included.
    pub(super) segment_laid: u64,
    pub(super) segment_bytes: u64,
    pub(super) next_seq: u64,
    pub(super) head: [u8; 32],
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: Instant,
    pub(super) checkpoint_records: u64,
    pub(super) checkpoint_interval: Duration,
    pub(super) key: SigningKey,
    pub(super) durable: bool,
    pub(super) failed: Arc<AtomicBool>,
    pub(super) pending: Arc<AtomicU64>,
    /// The checkpoint in the head file (shared with `Ledger::head`).
    pub(super) published: Arc<std::sync::Mutex<Option<SignedHead>>>,
    /// The newest checkpoint written into a segment, to publish when the head file is due.
    pub(super) last_signed: Option<SignedHead>,
    /// The replica named in checkpoints.
    pub(super) replica: Option<String>,
    /// The usage summary: each written batch is folded in.
    pub(super) usage: Arc<super::usage::UsageBook>,
}

impl Writer {
    pub(super) fn run(&mut self, receiver: mpsc::Receiver<Message>) {
        let mut seal: Option<tokio::sync::oneshot::Sender<Result<(), LedgerError>>> = None;
        loop {
            if let Some(done) = seal.take() {
                let _ = done.send(self.seal());
            }
            let first = match receiver.recv_timeout(self.checkpoint_interval) {
                Ok(Message::Record(first)) => first,
                Ok(Message::Seal(done)) => {
                    seal = Some(done);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.seal() {
                        self.fail(&error);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // Group commit: everything that is waiting goes into one write and one fsync.
            let mut batch = vec![first];
            if !self.durable {
                // Nobody waits for an async batch: gather for a moment, so that the writer wakes
                // once for many records rather than once for each.
                std::thread::sleep(ASYNC_GATHER);
            }
            while batch.len() < 4096 {
                match receiver.try_recv() {
                    Ok(Message::Record(more)) => batch.push(more),
                    // Sealed once this batch is written.
                    Ok(Message::Seal(done)) => {
                        seal = Some(done);
                        break;
                    }
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
                    self.usage
                        .note_batch(first_seq, batch.iter().map(|p| p.seen.as_deref()));
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
        if !self.failed.load(Ordering::Relaxed) {
            let _ = self.seal();
            if let Err(error) = self.cut_zeros() {
                tracing::warn!(%error, "cannot cut the zeros laid ahead in the last segment; the next start does");
            }
        }
        self.usage.close();
    }

    /// A checkpoint over everything written, unless there is nothing new to sign, and the
    /// head file brought up to it.
    fn seal(&mut self) -> Result<(), LedgerError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(LedgerError::Unavailable("an earlier write failed".into()));
        }
        if self.since_checkpoint > 0 {
            return self.checkpoint();
        }
        let published = self.published_seq();
        match self.last_signed.clone() {
            Some(signed) if signed.checkpoint.seq > published => self.publish(signed),
            _ => Ok(()),
        }
    }

    fn published_seq(&self) -> u64 {
        self.published
            .lock()
            .ok()
            .and_then(|head| head.as_ref().map(|h| h.checkpoint.seq))
            .unwrap_or(0)
    }

    /// A signed checkpoint over the chain up to `seq`, whose hash is `head`, and its line.
    fn sign(&self, batch: bool, seq: u64, head: &[u8; 32]) -> (SignedHead, Vec<u8>) {
        let checkpoint = Checkpoint {
            batch,
            seq,
            head: hex::encode(head),
            time: warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock)
                .to_rfc3339(),
            key_id: key_id(&self.key.verifying_key()),
            replica: self.replica.clone(),
        };
        let signature = hex::encode(self.key.sign(&checkpoint_bytes(&checkpoint)).to_bytes());
        let signed = SignedHead {
            checkpoint,
            signature,
        };
        (signed.clone(), checkpoint_line(&signed))
    }

    fn fail(&self, error: &LedgerError) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(%error, "ledger write failed; every later Check is denied until restart");
        }
    }

    /// Opens the segment to write to (a new one once it is full) as `self.segment`: its path.
    fn open_segment(&mut self) -> Result<PathBuf, LedgerError> {
        let rotate = match (&self.segment, &self.segment_path) {
            (None, Some(path)) => path
                .metadata()
                .map(|m| m.len() >= self.segment_bytes)
                .unwrap_or(true),
            (Some(_), Some(_)) => self.segment_len >= self.segment_bytes,
            (_, None) => true,
        };
        if rotate {
            self.cut_zeros()?;
            if let Some(sealed) = self.segment_path.take() {
                self.seal_index(&sealed)?;
            }
            let path = self
                .dir
                .join(format!("{SEGMENT_PREFIX}{:020}.jsonl", self.next_seq));
            self.segment = None;
            self.segment_path = Some(path);
        }
        let Some(path) = self.segment_path.clone() else {
            return Err(LedgerError::Unavailable(
                "no segment chosen to write".into(),
            ));
        };
        if self.segment.is_none() {
            // Written at `segment_len`, not appended: zeros may lie ahead of it.
            let file = warrant_files::private_file()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(io_error(&path))?;
            self.segment_len = file.metadata().map_err(io_error(&path))?.len();
            self.segment_laid = self.segment_len;
            if rotate {
                // The new file's name must survive a crash too.
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_error(&self.dir))?;
            }
            self.segment = Some(file);
        }
        Ok(path)
    }

    /// Writes `bytes` after the open segment's records (over zeros laid ahead, in durable mode)
    /// and syncs them when `sync`: the segment and where they start. If that fails, part of them
    /// may be on disk and their callers will be told DENY: the segment is cut back to its last
    /// acknowledged record so that nothing on disk says otherwise. (If even that fails, the torn
    /// tail is cut at the next start, and the ledger stops taking records either way.)
    fn write(&mut self, bytes: &[u8], sync: bool) -> Result<(PathBuf, u64), LedgerError> {
        let path = self.open_segment()?;
        let (base, laid) = (self.segment_len, self.segment_laid);
        let Some(file) = &self.segment else {
            return Err(LedgerError::Unavailable("no segment open to write".into()));
        };
        let end = base + bytes.len() as u64;
        let mut laid_to = laid;
        // Not past where the segment is left for the next one; and only for a small batch: a
        // large one's fdatasync is shared by many callers, and zeros under it would double
        // what the disk writes when it is busiest.
        let ahead = (end + PREALLOCATE).min(self.segment_bytes.max(end));
        let small = (bytes.len() as u64) < PREALLOCATE / 8;
        if self.durable && small && end > laid && ahead > end {
            match lay_zeros(file, laid, ahead) {
                Ok(()) => laid_to = ahead,
                // Only a speed-up: a disk too full for the zeros may still take the records.
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "cannot lay zeros ahead of the records");
                    let _ = file.set_len(laid);
                }
            }
        }
        let written = file
            .write_all_at(bytes, base)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if let Err(error) = written {
            let cut = file.set_len(base).and_then(|()| file.sync_data());
            if let Err(cut_error) = cut {
                tracing::error!(path = %path.display(), error = %cut_error, "cannot cut a failed batch back off the ledger");
            }
            self.segment_laid = base;
            return Err(io_error(&path)(error));
        }
        self.segment_len = end;
        self.segment_laid = laid_to.max(end);
        Ok((path, base))
    }

    /// Cuts the zeros laid ahead of the open segment's records, as it is left.
    fn cut_zeros(&mut self) -> Result<(), LedgerError> {
        if self.segment_laid <= self.segment_len {
            return Ok(());
        }
        let (Some(file), Some(path)) = (&self.segment, &self.segment_path) else {
            return Ok(());
        };
        file.set_len(self.segment_len)
            .and_then(|()| file.sync_data())
            .map_err(io_error(path))?;
        self.segment_laid = self.segment_len;
        Ok(())
    }

    /// Moves a segment the writer is leaving from the in-memory index to its index file: the
    /// file first, then the memory, so a lookup always finds the record in one or the other.
    fn seal_index(&mut self, sealed: &std::path::Path) -> Result<(), LedgerError> {
        let entries: Vec<(uuid::Uuid, u64, u32)> = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            index
                .iter()
                .filter(|(_, location)| location.segment.as_path() == sealed)
                .filter_map(|(id, location)| {
                    Some((
                        uuid::Uuid::parse_str(id).ok()?,
                        location.offset,
                        u32::try_from(location.length).ok()?,
                    ))
                })
                .collect()
        };
        if !sealed.exists() {
            return Ok(());
        }
        super::index::write_index(sealed, entries)?;
        self.index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, location| location.segment.as_path() != sealed);
        Ok(())
    }

    fn write_batch(&mut self, batch: &[Pending]) -> Result<u64, LedgerError> {
        let first_seq = self.next_seq;
        let mut bytes =
            Vec::with_capacity(batch.iter().map(|p| p.record.len() + 200).sum::<usize>() + 300);
        let mut head = self.head;
        let mut lines = Vec::with_capacity(batch.len());
        // Each record's `prev` is the hash the one before it was written with: encoded once.
        let hex = |hash: &[u8; 32]| -> Result<[u8; 64], LedgerError> {
            let mut text = [0u8; 64];
            hex::encode_to_slice(hash, &mut text)
                .map_err(|e| LedgerError::Unavailable(format!("cannot write a hash: {e}")))?;
            Ok(text)
        };
        let mut prev_hex = hex(&head)?;
        for (i, pending) in batch.iter().enumerate() {
            let start = bytes.len() as u64;
            // The line is itself canonical JSON ("entry" < "hash" < "prev"); its entry is written
            // in place and hashed where it stands.
            bytes.extend_from_slice(b"{\"entry\":");
            let entry_start = bytes.len();
            write_entry(
                first_seq + i as u64,
                pending.key,
                &pending.record,
                &mut bytes,
            );
            let hash = chain_hash(&head, &bytes[entry_start..]);
            let hash_hex = hex(&hash)?;
            bytes.extend_from_slice(b",\"hash\":\"");
            bytes.extend_from_slice(&hash_hex);
            bytes.extend_from_slice(b"\",\"prev\":\"");
            bytes.extend_from_slice(&prev_hex);
            bytes.extend_from_slice(b"\"}\n");
            head = hash;
            prev_hex = hash_hex;
            lines.push((
                pending.decision_id.clone(),
                start,
                bytes.len() as u64 - start,
            ));
        }
        let durable = self.durable;
        let signed = durable.then(|| {
            // Signed with the batch, in the same write and fsync: nothing is acknowledged that
            // is not covered by a signature on disk.
            let (signed, line) = self.sign(true, first_seq + batch.len() as u64 - 1, &head);
            bytes.extend_from_slice(&line);
            signed
        });
        let (path, base) = self.write(&bytes, durable)?;
        let segment = Arc::new(path);
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for (decision_id, start, length) in lines {
            let Some(decision_id) = decision_id else {
                continue;
            };
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
        if signed.is_some() {
            self.last_signed = signed;
        } else {
            self.since_checkpoint += batch.len() as u64;
        }
        // Before the batch is answered: whoever keeps heads (and `verify`) must be able to tell
        // a cut tail from the first records on.
        self.publish_if_due();
        Ok(first_seq)
    }

    /// A checkpoint and the head file, when one is due. The first records publish a head at
    /// once, so a ledger with records always has one.
    fn publish_if_due(&mut self) {
        let published = self.published_seq();
        let due = published == 0
            || self.next_seq - 1 - published >= self.checkpoint_records
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval;
        if due {
            // The batch is on disk and answered as recorded; a checkpoint that cannot be
            // written stops every later append instead.
            let published = match self.last_signed.clone() {
                Some(signed) if self.since_checkpoint == 0 => self.publish(signed),
                _ => self.checkpoint(),
            };
            if let Err(error) = published {
                self.fail(&error);
            }
        }
    }

    /// Signs the chain's head, appends the checkpoint and makes it the head file.
    fn checkpoint(&mut self) -> Result<(), LedgerError> {
        let (signed, bytes) = self.sign(false, self.next_seq - 1, &self.head);
        self.write(&bytes, true)?;
        self.since_checkpoint = 0;
        self.last_signed = Some(signed.clone());
        self.publish(signed)
    }

    /// Makes `signed` the head file (atomically), logs it, and serves it from `Ledger::head`:
    /// whoever keeps these can later tell a rolled-back ledger (`verify --expect-head`).
    fn publish(&mut self, signed: SignedHead) -> Result<(), LedgerError> {
        let bytes = checkpoint_line(&signed);
        let head_path = self.dir.join(HEAD_FILE);
        warrant_files::write_atomically(&head_path, &bytes).map_err(io_error(&head_path))?;
        let span = tracing::info_span!("ledger.checkpoint");
        span.in_scope(|| {
            tracing::info!(
                seq = signed.checkpoint.seq,
                head = %signed.checkpoint.head,
                key_id = %signed.checkpoint.key_id,
                signature = %signed.signature,
                "ledger head: keep SEQ:HEAD to detect a rollback with `warrant log verify --expect-head`"
            );
        });
        if let Ok(mut published) = self.published.lock() {
            *published = Some(signed);
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// Writes zeros into `file` from `from` to `to`.
fn lay_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let piece = usize::try_from(to - at).map_or(ZEROS.len(), |left| left.min(ZEROS.len()));
        file.write_all_at(&ZEROS[..piece], at)?;
        at += piece as u64;
    }
    Ok(())
}
