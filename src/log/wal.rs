//! The glommio half of the WAL: segment files, the group-commit writer task, recovery I/O.
//!
//! One writer task per WAL owns the active segment. `submit` only encodes records into a shared
//! pending buffer and wakes the writer; the writer takes *everything* pending, writes it with one
//! DMA write (4 KiB aligned, O_DIRECT; the partially filled last block is rewritten from an
//! in-memory copy), makes it durable, publishes the new durable ticket and goes round again.
//! No timer: whatever arrives while a write is in flight goes out together in the next one, so
//! batches grow with load by themselves and an idle log commits a lone record at once.
//!
//! Segments (`NNNNNNNNNNNNNNNNNNNN.seg`, a sequence number) are written full of zeros and
//! synced once when created (STACK-NOTES: 50-75% faster syncs than `fallocate`, whose unwritten
//! extents are converted, journalled, on every sync). The next segment is prepared by a
//! background task as soon as a segment becomes active, so rotation does not stall on zeroing.
//!
//! Failure policy: the first failed write or sync poisons the WAL. Every waiter gets the error,
//! every later submit is refused, nothing is retried (a failed fsync may have dropped dirty
//! pages; retrying and succeeding would acknowledge lost data).
//!
//! Compaction: the WAL remembers the highest entry index of every full segment;
//! [`Wal::remove_segments_through`] deletes, oldest first (the sequence stays contiguous), the
//! segments a snapshot covers entirely.

use std::{
    cell::RefCell,
    collections::VecDeque,
    future::poll_fn,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
};

use glommio::{
    io::{Directory, DmaFile, OpenOptions},
    GlommioError, Task,
};
use rkyv::util::AlignedVec;

use super::record::{self, EncodeError, LogRecord, RecoveredEntry, Replay};

/// DMA block: writes are aligned to it and the tail block is rewritten on each commit.
pub const BLOCK: u64 = 4096;
const MIN_SEGMENT_BYTES: u64 = 2 * BLOCK;
const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Largest single disk write; a bigger commit becomes several durable writes in a row.
const MAX_WRITE_BYTES: usize = 4 << 20;
/// Largest amount of encoded records waiting for the writer (beyond the write in flight).
const MAX_PENDING_BYTES: usize = 128 << 20;
const READ_CHUNK: u64 = 4 << 20;
/// How often a segment that failed for lack of space is tried again.
const NO_SPACE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
const ZERO_CHUNK: u64 = 1 << 20;
const MAX_SEGMENTS: usize = 1 << 20;
const SEGMENT_SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";
/// A small non-empty file opened for DMA reading before anything else (glommio #605).
const PROBE_FILE: &str = "DMA-PROBE";

/// How a write is made durable.
///
/// Measured with `benches/log_record.rs` on the dev VM (ext4 on virtio, pre-zeroed segment,
/// 120-byte records, machine loaded): both modes are bound by the device's sync latency
/// (~4 ms per commit at the time, the same as `dd oflag=direct,dsync`) and within noise of
/// each other: 1/64/512 records per commit gave ~210 / 18k / 116k records/s with O_DSYNC and
/// ~220 / 15k / 129k with fdatasync. STACK-NOTES measured O_DSYNC 15-40% ahead on a quieter
/// machine of the same kind, and it is one io_uring operation per commit instead of two, so it
/// is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Segments opened with O_DSYNC: a completed write is durable.
    #[default]
    Dsync,
    /// Plain O_DIRECT writes, each followed by an explicit `fdatasync`.
    Fdatasync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of each segment file: a multiple of 4 KiB, 8 KiB to 1 GiB. Bounds the largest
    /// record.
    pub segment_bytes: u64,
    /// Write new segments full of zeros (and sync them) before use. Without it segments grow
    /// with each write, which makes every sync also journal the new size.
    pub preallocate: bool,
    pub sync: SyncMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            preallocate: true,
            sync: SyncMode::Dsync,
        }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<(), WalError> {
        let s = self.segment_bytes;
        if s % BLOCK != 0 || !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&s) {
            return Err(WalError::Options(format!(
                "segment_bytes {s} must be a multiple of {BLOCK} between {MIN_SEGMENT_BYTES} and \
                 {MAX_SEGMENT_BYTES}"
            )));
        }
        Ok(())
    }

    /// Largest encoded record: one must always fit in an empty segment.
    fn max_record_len(&self) -> usize {
        self.segment_bytes as usize
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error ({op} {path}): {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// ENOSPC/EDQUOT: the disk is full; the member needs an operator.
    #[error("WAL: no space left on device ({op} {path})")]
    NoSpace { op: &'static str, path: PathBuf },
    /// Damage that is not a torn tail: the member must stop.
    #[error("WAL corrupt: {file}, offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(transparent)]
    Record(#[from] EncodeError),
    #[error("WAL backlog full: {pending} bytes wait for the disk")]
    Backlog { pending: usize },
    #[error("WAL is closed")]
    Closed,
    #[error("WAL ticket {ticket} was never issued (last issued: {last})")]
    BadTicket { ticket: u64, last: u64 },
    #[error("invalid WAL options: {0}")]
    Options(String),
}

impl WalError {
    fn io(op: &'static str, path: &Path, err: std::io::Error) -> WalError {
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => WalError::NoSpace {
                op,
                path: path.to_path_buf(),
            },
            _ => WalError::Io {
                op,
                path: path.to_path_buf(),
                source: Arc::new(err),
            },
        }
    }

    fn glommio(op: &'static str, path: &Path, err: GlommioError<()>) -> WalError {
        // Keep the errno: glommio's own conversion rebuilds EnhancedIoError without it.
        let io = match err {
            GlommioError::IoError(e) => e,
            GlommioError::EnhancedIoError { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        };
        WalError::io(op, path, io)
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// `submit` calls accepted.
    pub submits: u64,
    pub records: u64,
    /// Group commits: batches taken by the writer (each one or more writes).
    pub commits: u64,
    pub writes: u64,
    /// Durability points (O_DSYNC writes or fdatasync calls).
    pub syncs: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
}

/// What recovery found in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Contiguous ascending raft entries, after applying overwrites (see `record::Replay`).
    pub entries: Vec<RecoveredEntry>,
    /// The last hard state written, if any: `(term, vote, commit)`.
    pub hard_state: Option<(u64, u64, u64)>,
    /// A torn tail that was zeroed on disk: the segment and the offset where data now ends.
    pub truncated_tail: Option<(PathBuf, u64)>,
    /// Entries dropped because a later record rewrote their index (raft log truncation).
    pub replaced_entries: u64,
    /// Index gaps (entries appended after an installed snapshot) that dropped earlier entries.
    pub gap_resets: u64,
    pub segments: usize,
    pub records: u64,
}

struct Shared {
    /// Encoded, unsealed records waiting for the writer.
    pending: Vec<u8>,
    /// An empty buffer to swap in for `pending` (keeps its capacity across commits).
    spare_buf: Vec<u8>,
    /// Last ticket issued by `submit`.
    submitted: u64,
    /// Last ticket handed to the writer.
    taken: u64,
    /// Last ticket whose records are durable.
    durable: u64,
    failed: Option<WalError>,
    closing: bool,
    writer_done: bool,
    writer_waker: Option<Waker>,
    waiters: Vec<(u64, Waker)>,
    stats: WalStats,
    max_record_len: usize,
    /// For each `submit` still in `pending`: where its records end there, and the highest
    /// entry index among them (0 if none).
    marks: Vec<(usize, u64)>,
    spare_marks: Vec<(usize, u64)>,
    /// Full segments, oldest first, with the highest entry index each holds (an upper bound).
    closed: VecDeque<(u64, u64)>,
    /// The next segment cannot be made for lack of disk space; its preparation retries.
    no_space: bool,
    /// Test hook: the next disk write fails with this errno.
    #[cfg(test)]
    inject_write_errno: Option<i32>,
}

impl Shared {
    fn wake_waiters(&mut self) {
        let durable = self.durable;
        let all = self.failed.is_some() || self.writer_done;
        self.waiters.retain(|(t, w)| {
            if all || *t <= durable {
                w.wake_by_ref();
                false
            } else {
                true
            }
        });
    }
}

/// The write-ahead log. Lives on one glommio executor (not `Send`).
pub struct Wal {
    shared: Rc<RefCell<Shared>>,
    writer: Option<Task<Result<(), WalError>>>,
    dir: PathBuf,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, on a glommio executor: scans every segment
    /// in order, validates, zeroes a torn tail, and starts the writer task.
    pub async fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovery), WalError> {
        opts.validate()?;
        super::durable::create_dir_all(dir).map_err(|e| WalError::io("create dir", dir, e))?;
        dma_probe(dir).await?;
        let seqs = list_segments(dir)?;
        let mut seqs = seqs;
        let mut created = 0;
        if seqs.is_empty() {
            prepare_segment(dir, 1, opts).await?;
            seqs.push(1);
            created += 1;
        }

        // Scan every segment.
        let mut scans = Vec::with_capacity(seqs.len());
        let mut lens = Vec::with_capacity(seqs.len());
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let (image, len) = read_segment(&path).await?;
            let scan = record::scan_segment(&image).map_err(|c| WalError::Corrupt {
                file: path.clone(),
                offset: c.offset,
                reason: c.reason,
            })?;
            scans.push(scan);
            lens.push(len);
        }
        let plan = record::plan_recovery(&scans).map_err(|c| WalError::Corrupt {
            file: segment_path(dir, seqs[c.segment]),
            offset: c.offset,
            reason: c.reason,
        })?;

        let max_index = |scan: &record::SegmentScan| {
            scan.records
                .iter()
                .filter_map(|r| match &r.record {
                    record::OwnedRecord::Entry(e) => Some(e.index),
                    record::OwnedRecord::HardState(_) => None,
                })
                .max()
                .unwrap_or(0)
        };
        let closed: VecDeque<(u64, u64)> = scans[..plan.active]
            .iter()
            .zip(&seqs)
            .map(|(scan, &seq)| (seq, max_index(scan)))
            .collect();
        let active_max = max_index(&scans[plan.active]);
        let mut replay = Replay::default();
        let mut records = 0u64;
        for scan in &mut scans {
            for r in std::mem::take(&mut scan.records) {
                records += 1;
                replay.apply(r.record);
            }
        }

        // Open the active segment and repair its tail.
        let active_seq = seqs[plan.active];
        let active_path = segment_path(dir, active_seq);
        let file = open_segment(&active_path, opts.sync).await?;
        if file.alignment() > BLOCK {
            return Err(WalError::Options(format!(
                "device needs {}-byte aligned direct I/O; the WAL writes {BLOCK}-byte blocks",
                file.alignment()
            )));
        }
        let capacity = opts.segment_bytes.max(lens[plan.active] / BLOCK * BLOCK);
        let end = scans[plan.active].end;
        let tail = read_tail(&file, &active_path, end).await?;
        let mut truncated_tail = None;
        if let Some(t) = &plan.truncate {
            tracing::warn!(
                file = %active_path.display(),
                offset = t.offset,
                reason = t.reason,
                "WAL: zeroing a torn tail (an interrupted, unacknowledged write)"
            );
            zero_range(&file, &active_path, &tail, t.offset, t.dirty_until).await?;
            truncated_tail = Some((active_path.clone(), t.offset));
        }

        let recovery = Recovery {
            entries: replay.entries,
            hard_state: replay.hard_state.map(|h| (h.term, h.vote, h.commit)),
            truncated_tail,
            replaced_entries: replay.replaced,
            gap_resets: replay.gap_resets,
            segments: seqs.len(),
            records,
        };

        let shared = Rc::new(RefCell::new(Shared {
            pending: Vec::new(),
            spare_buf: Vec::new(),
            submitted: 0,
            taken: 0,
            durable: 0,
            failed: None,
            closing: false,
            writer_done: false,
            writer_waker: None,
            waiters: Vec::new(),
            stats: WalStats {
                segments_created: created,
                ..WalStats::default()
            },
            max_record_len: opts.max_record_len(),
            marks: Vec::new(),
            spare_marks: Vec::new(),
            closed,
            no_space: false,
            #[cfg(test)]
            inject_write_errno: None,
        }));
        let mut writer = Writer {
            shared: shared.clone(),
            dir: dir.to_path_buf(),
            opts,
            active: Segment {
                seq: active_seq,
                path: active_path,
                file,
                capacity,
            },
            pos: end,
            tail,
            spares: seqs[plan.active + 1..].iter().copied().collect(),
            preparing: None,
            active_max,
        };
        writer.ensure_preparing();
        let task = glommio::spawn_local(writer.run());
        Ok((
            Wal {
                shared,
                writer: Some(task),
                dir: dir.to_path_buf(),
            },
            recovery,
        ))
    }

    /// Queues records for the next group commit and returns their ticket (monotonic, one per
    /// call). Never blocks and never fails here: problems surface from [`Wal::wait_durable`].
    /// A record over the size limit, or a backlog over `MAX_PENDING_BYTES`, poisons the WAL
    /// (raft cannot skip an entry, and failing one ticket while a later one succeeded would
    /// acknowledge a log with a hole). After a failure, or once closing, tickets still come
    /// back but can never become durable.
    pub fn submit(&self, records: &[LogRecord<'_>]) -> u64 {
        let mut guard = self.shared.borrow_mut();
        let s = &mut *guard;
        s.submitted += 1;
        let ticket = s.submitted;
        if s.closing || s.writer_done {
            // Only reachable through misuse (close and drop consume the Wal); make sure the
            // ticket can never be reported durable.
            s.failed.get_or_insert(WalError::Closed);
        }
        if s.failed.is_some() {
            return ticket;
        }
        let start = s.pending.len();
        let mut refused = None;
        for r in records {
            if let Err(e) = record::encode(r, &mut s.pending, s.max_record_len) {
                refused = Some(e.into());
                break;
            }
        }
        // A lone submit may exceed the limit; it is still bounded by the caller's batch.
        if refused.is_none() && start > 0 && s.pending.len() > MAX_PENDING_BYTES {
            refused = Some(WalError::Backlog {
                pending: s.pending.len(),
            });
        }
        if let Some(e) = refused {
            s.pending.truncate(start);
            tracing::error!(error = %e, "WAL refused a submit; refusing all further writes");
            s.failed = Some(e);
            s.wake_waiters();
        } else {
            s.stats.submits += 1;
            s.stats.records += records.len() as u64;
            let max_index = records
                .iter()
                .map(|r| match r {
                    LogRecord::Entry { index, .. } => *index,
                    LogRecord::HardState { .. } => 0,
                })
                .max()
                .unwrap_or(0);
            let end = s.pending.len();
            s.marks.push((end, max_index));
        }
        if let Some(w) = s.writer_waker.take() {
            w.wake();
        }
        ticket
    }

    /// Resolves once everything submitted up to `ticket` is written and durable; or with the
    /// error that poisoned the WAL.
    pub async fn wait_durable(&self, ticket: u64) -> Result<(), WalError> {
        poll_fn(|cx| {
            let mut s = self.shared.borrow_mut();
            if ticket <= s.durable {
                return Poll::Ready(Ok(()));
            }
            if ticket > s.submitted {
                return Poll::Ready(Err(WalError::BadTicket {
                    ticket,
                    last: s.submitted,
                }));
            }
            if let Some(e) = &s.failed {
                return Poll::Ready(Err(e.clone()));
            }
            if s.writer_done {
                return Poll::Ready(Err(WalError::Closed));
            }
            match s
                .waiters
                .iter_mut()
                .find(|(t, w)| *t == ticket && w.will_wake(cx.waker()))
            {
                Some(_) => {}
                None => s.waiters.push((ticket, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    /// The last ticket handed out: durable once everything submitted so far is.
    pub fn last_ticket(&self) -> u64 {
        self.shared.borrow().submitted
    }

    /// The highest ticket known durable.
    pub fn durable_ticket(&self) -> u64 {
        self.shared.borrow().durable
    }

    pub fn stats(&self) -> WalStats {
        self.shared.borrow().stats
    }

    /// Deletes the oldest full segments while every entry in them is at or below `index`
    /// (covered by a durable snapshot). The caller must have made its current hard state
    /// durable in a later segment first. Returns how many segments went.
    pub async fn remove_segments_through(&self, index: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        loop {
            let next = {
                let s = self.shared.borrow();
                match s.closed.front() {
                    Some(&(seq, max)) if max <= index => seq,
                    _ => break,
                }
            };
            let path = segment_path(&self.dir, next);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(WalError::io("remove", &path, e)),
            }
            self.shared.borrow_mut().closed.pop_front();
            removed += 1;
        }
        if removed > 0 {
            sync_dir_std(&self.dir)?;
            tracing::info!(
                segments = removed,
                through = index,
                "WAL: removed segments a snapshot covers"
            );
        }
        Ok(removed)
    }

    /// True while the next segment cannot be created for lack of disk space. Records already
    /// submitted still fit the active segment (or wait for space: nothing is dropped); a
    /// caller should refuse new writes until this clears, which it does by itself once space
    /// is freed.
    pub fn out_of_space(&self) -> bool {
        self.shared.borrow().no_space
    }

    /// The error that poisoned the log, if one has.
    pub fn failure(&self) -> Option<WalError> {
        self.shared.borrow().failed.clone()
    }

    /// Full segments still on disk.
    pub fn closed_segments(&self) -> usize {
        self.shared.borrow().closed.len()
    }

    /// Bytes encoded but not yet handed to the writer (for back-pressure).
    pub fn pending_bytes(&self) -> usize {
        self.shared.borrow().pending.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Commits everything submitted so far, stops the writer and closes the files. Returns the
    /// error that poisoned the WAL, if any.
    pub async fn close(mut self) -> Result<(), WalError> {
        {
            let mut s = self.shared.borrow_mut();
            s.closing = true;
            if let Some(w) = s.writer_waker.take() {
                w.wake();
            }
        }
        match self.writer.take() {
            Some(task) => task.await,
            None => Ok(()),
        }
    }

    #[cfg(test)]
    fn inject_write_errno(&self, errno: i32) {
        self.shared.borrow_mut().inject_write_errno = Some(errno);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Dropping the writer task cancels it; records not yet durable stay unacknowledged.
        let mut s = self.shared.borrow_mut();
        s.closing = true;
    }
}

struct Segment {
    seq: u64,
    path: PathBuf,
    file: DmaFile,
    capacity: u64,
}

struct Writer {
    shared: Rc<RefCell<Shared>>,
    dir: PathBuf,
    opts: WalOptions,
    active: Segment,
    /// Where the next record goes in the active segment.
    pos: u64,
    /// The bytes `[pos - pos % BLOCK, pos)` of the active segment, rewritten with each write.
    tail: Vec<u8>,
    /// Prepared (zeroed, durable) segments after the active one, in order.
    spares: VecDeque<u64>,
    preparing: Option<(u64, Task<Result<(), WalError>>)>,
    /// Highest entry index in the active segment.
    active_max: u64,
}

impl Writer {
    async fn run(mut self) -> Result<(), WalError> {
        let result = self.run_inner().await;
        {
            let mut s = self.shared.borrow_mut();
            if let Err(e) = &result {
                tracing::error!(error = %e, "WAL failed; refusing all further writes");
                if s.failed.is_none() {
                    s.failed = Some(e.clone());
                }
            }
            s.writer_done = true;
            s.wake_waiters();
        }
        // Let a segment being prepared finish, so no temporary file is left behind.
        if let Some((_, task)) = self.preparing.take() {
            let _ = task.await;
        }
        if let Err(e) = self.active.file.close().await {
            // Everything written was already durable; closing cannot lose data.
            tracing::warn!(error = %e, "WAL: closing the active segment failed");
        }
        result
    }

    async fn run_inner(&mut self) -> Result<(), WalError> {
        loop {
            let shared = self.shared.clone();
            let job = poll_fn(|cx| {
                let mut guard = shared.borrow_mut();
                let s = &mut *guard;
                if let Some(e) = &s.failed {
                    return Poll::Ready(Err(e.clone()));
                }
                if s.submitted > s.taken {
                    let buf = std::mem::replace(&mut s.pending, std::mem::take(&mut s.spare_buf));
                    let marks = std::mem::replace(&mut s.marks, std::mem::take(&mut s.spare_marks));
                    s.taken = s.submitted;
                    return Poll::Ready(Ok(Some((buf, marks, s.taken))));
                }
                if s.closing {
                    return Poll::Ready(Ok(None));
                }
                s.writer_waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await?;
            let Some((mut buf, mut marks, ticket)) = job else {
                return Ok(());
            };
            if !buf.is_empty() {
                self.commit(&buf, &marks).await?;
                self.shared.borrow_mut().stats.commits += 1;
            }
            let mut s = self.shared.borrow_mut();
            s.durable = ticket;
            s.wake_waiters();
            buf.clear();
            if buf.capacity() > s.spare_buf.capacity() {
                s.spare_buf = buf;
            }
            marks.clear();
            if marks.capacity() > s.spare_marks.capacity() {
                s.spare_marks = marks;
            }
        }
    }

    /// Writes a batch of encoded records, splitting it at segment ends and into writes of at
    /// most `MAX_WRITE_BYTES`; each write is durable before the next is issued (the torn-tail
    /// rule in `record` relies on it).
    async fn commit(&mut self, buf: &[u8], marks: &[(usize, u64)]) -> Result<(), WalError> {
        let mut chunk_start = 0;
        let mut off = 0;
        let mut mark = 0;
        while off < buf.len() {
            let len = record::encoded_len(&buf[off..]);
            // The submit this record belongs to; its highest index bounds the record's.
            while mark + 1 < marks.len() && marks[mark].0 <= off {
                mark += 1;
            }
            let max_index = marks.get(mark).map_or(0, |m| m.1);
            let chunk_len = off - chunk_start;
            let fits = self.pos + (chunk_len + len) as u64 <= self.active.capacity;
            if fits && (chunk_len == 0 || chunk_len + len <= MAX_WRITE_BYTES) {
                self.active_max = self.active_max.max(max_index);
                off += len;
                continue;
            }
            if chunk_len > 0 {
                self.write_chunk(&buf[chunk_start..off]).await?;
                chunk_start = off;
            }
            if self.pos + len as u64 > self.active.capacity {
                self.rotate().await?;
                // submit bounds every record by segment_bytes <= a new segment's capacity.
                assert!(
                    len as u64 <= self.active.capacity,
                    "record larger than a segment"
                );
            }
        }
        if off > chunk_start {
            self.write_chunk(&buf[chunk_start..off]).await?;
        }
        Ok(())
    }

    /// One durable write of whole records at `pos`, rewriting the partial tail block first.
    async fn write_chunk(&mut self, recs: &[u8]) -> Result<(), WalError> {
        let path = &self.active.path;
        let block_start = self.pos - self.pos % BLOCK;
        let prefix = self.tail.len();
        let total = prefix + recs.len();
        let buf_len = record::align_up(total, BLOCK as usize);
        let mut dma = self.active.file.alloc_dma_buffer(buf_len);
        let b = dma.as_bytes_mut();
        b[..prefix].copy_from_slice(&self.tail);
        b[prefix..total].copy_from_slice(recs);
        b[total..].fill(0);
        // pos < capacity <= MAX_SEGMENT_BYTES < 4 GiB.
        let write_start = self.pos as u32;
        let mut off = prefix;
        while off < total {
            let len = record::encoded_len(&b[off..]);
            record::seal(&mut b[off..off + len], write_start);
            off += len;
        }
        let tail_from = total - total % BLOCK as usize;
        let new_tail = b[tail_from..total].to_vec();

        #[cfg(test)]
        if let Some(errno) = self.shared.borrow_mut().inject_write_errno.take() {
            return Err(WalError::io(
                "write",
                path,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        let n = self
            .active
            .file
            .write_at(dma, block_start)
            .await
            .map_err(|e| WalError::glommio("write", path, e))?;
        if n != buf_len {
            return Err(WalError::Io {
                op: "write",
                path: path.clone(),
                source: Arc::new(std::io::Error::other(format!(
                    "short write: {n} of {buf_len} bytes"
                ))),
            });
        }
        if self.opts.sync == SyncMode::Fdatasync {
            self.active
                .file
                .fdatasync()
                .await
                .map_err(|e| WalError::glommio("fdatasync", path, e))?;
        }
        let mut s = self.shared.borrow_mut();
        s.stats.writes += 1;
        s.stats.syncs += 1;
        s.stats.bytes_written += buf_len as u64;
        drop(s);
        self.pos += recs.len() as u64;
        self.tail = new_tail;
        Ok(())
    }

    /// Moves to the next segment (prepared ahead when possible).
    async fn rotate(&mut self) -> Result<(), WalError> {
        let next = self.active.seq + 1;
        if self.spares.is_empty() {
            match self.preparing.take() {
                Some((seq, task)) => {
                    task.await?;
                    self.spares.push_back(seq);
                }
                None => {
                    prepare_segment(&self.dir, next, self.opts).await?;
                    self.shared.borrow_mut().stats.segments_created += 1;
                    self.spares.push_back(next);
                }
            }
        }
        let seq = self.spares.pop_front().unwrap_or(next);
        assert_eq!(seq, next, "spare segments are consecutive");
        let path = segment_path(&self.dir, seq);
        let file = open_segment(&path, self.opts.sync).await?;
        let len = file
            .file_size()
            .await
            .map_err(|e| WalError::glommio("stat", &path, e))?;
        {
            let mut s = self.shared.borrow_mut();
            let closed = (self.active.seq, self.active_max);
            s.closed.push_back(closed);
        }
        self.active_max = 0;
        let old = std::mem::replace(
            &mut self.active,
            Segment {
                seq,
                path,
                file,
                capacity: self.opts.segment_bytes.max(len / BLOCK * BLOCK),
            },
        );
        if let Err(e) = old.file.close().await {
            tracing::warn!(error = %e, "WAL: closing a full segment failed");
        }
        self.pos = 0;
        self.tail.clear();
        self.ensure_preparing();
        Ok(())
    }

    /// Starts preparing the segment after the last known one if none is ready.
    fn ensure_preparing(&mut self) {
        if !self.spares.is_empty() || self.preparing.is_some() {
            return;
        }
        let seq = self.active.seq + 1;
        let (dir, opts, shared) = (self.dir.clone(), self.opts, self.shared.clone());
        let task = glommio::spawn_local(async move {
            loop {
                match prepare_segment(&dir, seq, opts).await {
                    Ok(()) => break,
                    // A full disk is the operator's to fix, and nothing is lost meanwhile:
                    // report it and try again until space appears.
                    Err(e @ WalError::NoSpace { .. }) => {
                        let first = !std::mem::replace(&mut shared.borrow_mut().no_space, true);
                        if first {
                            tracing::error!(error = %e, "WAL: disk full; refusing new writes until space is freed");
                        }
                        if shared.borrow().closing {
                            return Err(e);
                        }
                        glommio::timer::sleep(NO_SPACE_RETRY).await;
                    }
                    Err(e) => {
                        // Any other failure of the log's disk stops the log now, not at the
                        // next rotation.
                        let mut s = shared.borrow_mut();
                        s.no_space = false;
                        if s.failed.is_none() {
                            s.failed = Some(e.clone());
                        }
                        if let Some(w) = s.writer_waker.take() {
                            w.wake();
                        }
                        s.wake_waiters();
                        return Err(e);
                    }
                }
            }
            let mut s = shared.borrow_mut();
            if std::mem::replace(&mut s.no_space, false) {
                tracing::info!("WAL: disk space is back; accepting writes again");
            }
            s.stats.segments_created += 1;
            Ok(())
        });
        self.preparing = Some((seq, task));
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// Segment sequence numbers present in `dir`, ascending and checked contiguous; stale
/// temporary files from an interrupted preparation are removed.
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| WalError::io("list", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| WalError::io("list", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(TMP_SUFFIX) {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                let p = ent.path();
                tracing::info!(file = %p.display(), "WAL: removing an unfinished segment");
                std::fs::remove_file(&p).map_err(|e| WalError::io("remove", &p, e))?;
            }
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(seq) = stem.parse::<u64>() else {
            continue;
        };
        seqs.push(seq);
        if seqs.len() > MAX_SEGMENTS {
            return Err(WalError::Options(format!(
                "more than {MAX_SEGMENTS} segments in {}",
                dir.display()
            )));
        }
    }
    seqs.sort_unstable();
    for w in seqs.windows(2) {
        if w[1] != w[0] + 1 {
            return Err(WalError::Corrupt {
                file: segment_path(dir, w[0] + 1),
                offset: 0,
                reason: format!("segment missing between {} and {}", w[0], w[1]),
            });
        }
    }
    Ok(seqs)
}

async fn open_segment(path: &Path, sync: SyncMode) -> Result<DmaFile, WalError> {
    let flags = match sync {
        SyncMode::Dsync => libc::O_DSYNC,
        SyncMode::Fdatasync => 0,
    };
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .dma_open(path)
        .await
        .map_err(|e| WalError::glommio("open", path, e))
}

/// Reads a whole segment into an aligned buffer (so payloads can be accessed in place).
async fn read_segment(path: &Path) -> Result<(AlignedVec<16>, u64), WalError> {
    let file = DmaFile::open(path)
        .await
        .map_err(|e| WalError::glommio("open", path, e))?;
    let len = file
        .file_size()
        .await
        .map_err(|e| WalError::glommio("stat", path, e))?;
    if len > MAX_SEGMENT_BYTES {
        return Err(WalError::Corrupt {
            file: path.to_path_buf(),
            offset: MAX_SEGMENT_BYTES,
            reason: format!("segment of {len} bytes is over the {MAX_SEGMENT_BYTES}-byte limit"),
        });
    }
    let mut image = AlignedVec::<16>::with_capacity(len as usize);
    let mut off = 0u64;
    while off < len {
        let want = READ_CHUNK.min(record::align_up((len - off) as usize, BLOCK as usize) as u64);
        let r = file
            .read_at_aligned(off, want as usize)
            .await
            .map_err(|e| WalError::glommio("read", path, e))?;
        if r.is_empty() {
            break;
        }
        image.extend_from_slice(&r);
        off += r.len() as u64;
    }
    let _ = file.close().await;
    if (image.len() as u64) < len {
        return Err(WalError::Io {
            op: "read",
            path: path.to_path_buf(),
            source: Arc::new(std::io::Error::other(format!(
                "short read: {} of {len} bytes",
                image.len()
            ))),
        });
    }
    Ok((image, len))
}

/// The bytes of the block holding `end`, before `end`.
async fn read_tail(file: &DmaFile, path: &Path, end: u64) -> Result<Vec<u8>, WalError> {
    let block_start = end - end % BLOCK;
    let n = (end - block_start) as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    let r = file
        .read_at_aligned(block_start, BLOCK as usize)
        .await
        .map_err(|e| WalError::glommio("read", path, e))?;
    match r.get(..n) {
        Some(b) => Ok(b.to_vec()),
        None => Err(WalError::Io {
            op: "read",
            path: path.to_path_buf(),
            source: Arc::new(std::io::Error::other("short read of the tail block")),
        }),
    }
}

/// Zeroes `[from, until)` (keeping `tail`, the bytes of from's block before it) and syncs.
async fn zero_range(
    file: &DmaFile,
    path: &Path,
    tail: &[u8],
    from: u64,
    until: u64,
) -> Result<(), WalError> {
    let mut pos = from - from % BLOCK;
    let end = record::align_up(until as usize, BLOCK as usize) as u64;
    let mut first = true;
    while pos < end {
        let n = ZERO_CHUNK.min(end - pos) as usize;
        let mut buf = file.alloc_dma_buffer(n);
        let b = buf.as_bytes_mut();
        b.fill(0);
        if first {
            b[..tail.len()].copy_from_slice(tail);
            first = false;
        }
        let w = file
            .write_at(buf, pos)
            .await
            .map_err(|e| WalError::glommio("write", path, e))?;
        if w != n {
            return Err(WalError::Io {
                op: "write",
                path: path.to_path_buf(),
                source: Arc::new(std::io::Error::other(
                    "short write while zeroing a torn tail",
                )),
            });
        }
        pos += n as u64;
    }
    file.fdatasync()
        .await
        .map_err(|e| WalError::glommio("fdatasync", path, e))
}

/// Creates segment `seq`: zero-filled and synced under a temporary name when preallocating,
/// then renamed into place; the directory is synced either way.
async fn prepare_segment(dir: &Path, seq: u64, opts: WalOptions) -> Result<(), WalError> {
    let path = segment_path(dir, seq);
    if !opts.preallocate {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| WalError::io("create", &path, e))?;
        return sync_dir(dir).await;
    }
    let tmp = dir.join(format!("{seq:020}{TMP_SUFFIX}"));
    let res = async {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&tmp)
            .await
            .map_err(|e| WalError::glommio("create", &tmp, e))?;
        let zeros = {
            let mut b = file.alloc_dma_buffer(ZERO_CHUNK as usize);
            b.as_bytes_mut().fill(0);
            Rc::new(b)
        };
        let mut pos = 0;
        while pos < opts.segment_bytes {
            let n = ZERO_CHUNK.min(opts.segment_bytes - pos);
            let w = if n == ZERO_CHUNK {
                file.write_rc_at(zeros.clone(), pos).await
            } else {
                let mut b = file.alloc_dma_buffer(n as usize);
                b.as_bytes_mut().fill(0);
                file.write_at(b, pos).await
            }
            .map_err(|e| WalError::glommio("zero-fill", &tmp, e))?;
            if w as u64 != n {
                // Pre-zeroed files only come up short when the disk is full.
                return Err(WalError::NoSpace {
                    op: "zero-fill",
                    path: tmp.clone(),
                });
            }
            pos += n;
        }
        file.fdatasync()
            .await
            .map_err(|e| WalError::glommio("fdatasync", &tmp, e))?;
        file.close()
            .await
            .map_err(|e| WalError::glommio("close", &tmp, e))?;
        // Made durable just below, on the ring rather than blocking the executor.
        #[allow(clippy::disallowed_methods)]
        std::fs::rename(&tmp, &path).map_err(|e| WalError::io("rename", &tmp, e))?;
        sync_dir(dir).await
    }
    .await;
    if res.is_err() {
        // Free the space (ENOSPC) and leave no half-made file; recovery would remove it anyway.
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

async fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = Directory::open(dir)
        .await
        .map_err(|e| WalError::glommio("open dir", dir, e))?;
    d.sync()
        .await
        .map_err(|e| WalError::glommio("fsync dir", dir, e))?;
    let _ = d.close().await;
    Ok(())
}

fn sync_dir_std(dir: &Path) -> Result<(), WalError> {
    super::durable::sync_dir(dir).map_err(|e| WalError::io("fsync dir", dir, e))
}

/// Works around glommio #605: the first DMA file a thread opens decides, per device, whether
/// reads use the poll ring; an empty file opened read+write makes the probe succeed wrongly and
/// every later DMA read then fails with EOPNOTSUPP on virtio disks. Opening a non-empty file
/// read-only first makes the probe read real blocks. `Wal::open` calls it; other code that
/// opens DMA files on an executor before the WAL does should call it first (any dir on the
/// same device; it leaves a 4 KiB `DMA-PROBE` file there).
pub async fn dma_probe(dir: &Path) -> Result<(), WalError> {
    let path = dir.join(PROBE_FILE);
    let ok = std::fs::metadata(&path)
        .map(|m| m.len() >= BLOCK)
        .unwrap_or(false);
    if !ok {
        std::fs::write(&path, [0xA5u8; BLOCK as usize])
            .and_then(|_| std::fs::File::open(&path)?.sync_all())
            .map_err(|e| WalError::io("create", &path, e))?;
    }
    let file = DmaFile::open(&path)
        .await
        .map_err(|e| WalError::glommio("open", &path, e))?;
    let r = file.read_at_aligned(0, BLOCK as usize).await;
    let _ = file.close().await;
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(WalError::glommio(
            "direct I/O read probe (if EOPNOTSUPP: a DMA file was opened on this thread before \
             the WAL; see glommio #605)",
            &path,
            e,
        )),
    }
}

/// Checks, before any executor starts, that io_uring is usable and that the locked-memory limit
/// suffices for glommio (raising the soft limit to the hard one if needed). glommio itself only
/// panics deep inside executor start-up in these cases.
pub fn probe_io_uring() -> Result<(), String> {
    const MIN_MEMLOCK: libc::rlim_t = 512 * 1024;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(format!(
            "cannot read RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur < MIN_MEMLOCK && lim.rlim_cur != libc::RLIM_INFINITY {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        let ok = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0;
        if !ok || (lim.rlim_max < MIN_MEMLOCK && lim.rlim_max != libc::RLIM_INFINITY) {
            return Err(format!(
                "the locked-memory limit (RLIMIT_MEMLOCK) is {} KiB, hard limit {} KiB; glommio \
                 needs at least {} KiB per executor (more for registered I/O buffers). Raise it: \
                 `ulimit -l unlimited`, LimitMEMLOCK=infinity in the systemd unit, or \
                 --ulimit memlock=-1 for containers",
                lim.rlim_cur / 1024,
                lim.rlim_max / 1024,
                MIN_MEMLOCK / 1024
            ));
        }
    }

    // io_uring_setup(2) with a zeroed struct io_uring_params (120 bytes).
    let mut params = [0u32; 30];
    // SAFETY: the kernel reads and writes exactly sizeof(struct io_uring_params) = 120 bytes.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let hint = match err.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel lacks io_uring (Linux >= 5.8 needed)".to_string(),
            Some(libc::EPERM) | Some(libc::EACCES) => format!(
                "io_uring is forbidden (sysctl kernel.io_uring_disabled = {}, or a seccomp \
                 profile such as Docker's default blocks it)",
                if disabled.is_empty() { "?" } else { &disabled }
            ),
            Some(libc::ENOMEM) => "not enough locked memory for an io_uring ring".to_string(),
            _ => "io_uring_setup failed".to_string(),
        };
        return Err(format!("io_uring is not usable: {hint}: {err}"));
    }
    // SAFETY: closing the fd io_uring_setup just returned to us.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn run<F: Future<Output = ()>>(f: F) {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(f);
    }

    fn small() -> WalOptions {
        WalOptions {
            segment_bytes: 16 * BLOCK,
            ..WalOptions::default()
        }
    }

    fn entry(index: u64, term: u64, data: &[u8]) -> LogRecord<'_> {
        LogRecord::Entry {
            index,
            term,
            data,
            conf_change: false,
        }
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("entry number {i} ")
            .repeat((i % 7 + 1) as usize)
            .into_bytes()
    }

    fn idx(r: &Recovery) -> Vec<u64> {
        r.entries.iter().map(|e| e.index).collect()
    }

    async fn write_entries(wal: &Wal, range: std::ops::RangeInclusive<u64>, term: u64) {
        for i in range {
            let d = payload(i);
            let t = wal.submit(&[entry(i, term, &d)]);
            wal.wait_durable(t).await.unwrap();
        }
    }

    #[test]
    fn round_trip_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        for sync in [SyncMode::Dsync, SyncMode::Fdatasync] {
            let _ = std::fs::remove_dir_all(&dir);
            let dir = dir.clone();
            run(async move {
                let opts = WalOptions { sync, ..small() };
                let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
                assert_eq!(
                    rec,
                    Recovery {
                        segments: 1,
                        ..Recovery::default()
                    }
                );
                let d1 = payload(1);
                let t = wal.submit(&[
                    entry(1, 1, &d1),
                    LogRecord::HardState {
                        term: 1,
                        vote: 3,
                        commit: 0,
                    },
                ]);
                wal.wait_durable(t).await.unwrap();
                assert_eq!(wal.durable_ticket(), t);
                write_entries(&wal, 2..=20, 1).await;
                let t = wal.submit(&[LogRecord::HardState {
                    term: 2,
                    vote: 1,
                    commit: 20,
                }]);
                wal.wait_durable(t).await.unwrap();
                let stats = wal.stats();
                assert_eq!(stats.records, 22);
                wal.close().await.unwrap();

                let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
                assert_eq!(idx(&rec), (1..=20).collect::<Vec<_>>());
                for e in &rec.entries {
                    assert_eq!(e.data, payload(e.index));
                    assert_eq!(e.term, 1);
                }
                assert_eq!(rec.hard_state, Some((2, 1, 20)));
                assert_eq!(rec.truncated_tail, None);
                // Appending after recovery continues the log.
                write_entries(&wal, 21..=25, 2).await;
                wal.close().await.unwrap();
                let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
                assert_eq!(idx(&rec), (1..=25).collect::<Vec<_>>());
                assert_eq!(rec.entries[24].term, 2);
                wal.close().await.unwrap();
            });
        }
    }

    #[test]
    fn group_commit_batches_while_a_write_is_in_flight() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let (wal, _) = Wal::open(&dir, small()).await.unwrap();
            let wal = Rc::new(wal);
            let first = wal.submit(&[entry(1, 1, b"first")]);
            // Let the writer take the first record and start its write.
            while wal.shared.borrow().taken < first {
                futures_lite::future::yield_now().await;
            }
            let mut waiters = Vec::new();
            for i in 2..=100u64 {
                let d = payload(i);
                let t = wal.submit(&[entry(i, 1, &d)]);
                let w = wal.clone();
                waiters.push(glommio::spawn_local(async move { w.wait_durable(t).await }));
            }
            for w in waiters {
                w.await.unwrap();
            }
            wal.wait_durable(first).await.unwrap();
            let s = wal.stats();
            assert_eq!(s.submits, 100);
            assert_eq!(s.records, 100);
            // One write for the first record, one (or, if the writer was slow, a few) for
            // the 99 submitted meanwhile: never one per submit.
            assert!(s.commits >= 2 && s.commits <= 3, "{s:?}");
            assert_eq!(s.syncs, s.writes);
            assert_eq!(wal.durable_ticket(), 100);
            let wal = Rc::try_unwrap(wal).ok().unwrap();
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(&dir, small()).await.unwrap();
            assert_eq!(idx(&rec), (1..=100).collect::<Vec<_>>());
            wal.close().await.unwrap();
        });
    }

    #[test]
    fn tickets_without_records_and_bad_tickets() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let (wal, _) = Wal::open(&dir, small()).await.unwrap();
            let t = wal.submit(&[]);
            wal.wait_durable(t).await.unwrap();
            assert!(matches!(
                wal.wait_durable(t + 5).await,
                Err(WalError::BadTicket { .. })
            ));
            wal.close().await.unwrap();
        });
    }

    #[test]
    fn rotation_across_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let opts = WalOptions {
            segment_bytes: 2 * BLOCK,
            ..WalOptions::default()
        };
        run(async move {
            let (wal, _) = Wal::open(&dir, opts).await.unwrap();
            let big = vec![7u8; 1500];
            // Single-record commits, then one commit spanning several segments.
            for i in 1..=10 {
                let t = wal.submit(&[entry(i, 1, &big)]);
                wal.wait_durable(t).await.unwrap();
            }
            let many: Vec<LogRecord<'_>> = (11..=40).map(|i| entry(i, 1, &big)).collect();
            let t = wal.submit(&many);
            wal.wait_durable(t).await.unwrap();
            let created = wal.stats().segments_created;
            wal.close().await.unwrap();
            let segs = list_segments(&dir).unwrap();
            assert!(segs.len() >= 8, "{segs:?}");
            // The spare after the active segment may still have been in preparation.
            assert!(segs.len() - created as usize <= 1, "{created} {segs:?}");
            for &s in &segs {
                let len = std::fs::metadata(segment_path(&dir, s)).unwrap().len();
                assert_eq!(len, 2 * BLOCK);
            }

            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            assert_eq!(idx(&rec), (1..=40).collect::<Vec<_>>());
            assert!(rec.entries.iter().all(|e| e.data == big));
            write_entries(&wal, 41..=45, 1).await;
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            assert_eq!(idx(&rec), (1..=45).collect::<Vec<_>>());
            wal.close().await.unwrap();
        });
    }

    #[test]
    fn segments_a_snapshot_covers_are_removed_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let opts = WalOptions {
            segment_bytes: 2 * BLOCK,
            ..WalOptions::default()
        };
        run(async move {
            let (wal, _) = Wal::open(&dir, opts).await.unwrap();
            let big = vec![7u8; 1500];
            for i in 1..=20 {
                let t = wal.submit(&[entry(i, 1, &big)]);
                wal.wait_durable(t).await.unwrap();
            }
            let full = wal.closed_segments();
            assert!(full >= 3, "{full}");
            // Nothing is covered by a snapshot at index 0 or 1 (a segment holds several).
            assert_eq!(wal.remove_segments_through(1).await.unwrap(), 0);
            let removed = wal.remove_segments_through(12).await.unwrap();
            assert!(removed >= 2, "{removed}");
            // A durable hard state after the compaction point, as the sequencer writes.
            let t = wal.submit(&[LogRecord::HardState {
                term: 1,
                vote: 1,
                commit: 20,
            }]);
            wal.wait_durable(t).await.unwrap();
            wal.close().await.unwrap();

            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            let first = rec.entries[0].index;
            assert!(first > 1 && first <= 13, "first entry kept: {first}");
            assert_eq!(idx(&rec), (first..=20).collect::<Vec<_>>());
            assert_eq!(rec.hard_state, Some((1, 1, 20)));
            // After a restart the full segments are known again and go the same way.
            assert_eq!(wal.closed_segments(), full - removed);
            let removed2 = wal.remove_segments_through(20).await.unwrap();
            assert_eq!(removed2, full - removed);
            write_entries(&wal, 21..=22, 1).await;
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            assert_eq!(*idx(&rec).last().unwrap(), 22);
            wal.close().await.unwrap();
        });
    }

    #[test]
    fn index_overwrite_last_writer_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let (wal, _) = Wal::open(&dir, small()).await.unwrap();
            write_entries(&wal, 1..=5, 1).await;
            // A new leader truncates our log at 3 by sending its own 3 and 4.
            let t = wal.submit(&[entry(3, 2, b"new three"), entry(4, 2, b"new four")]);
            wal.wait_durable(t).await.unwrap();
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(&dir, small()).await.unwrap();
            let got: Vec<(u64, u64)> = rec.entries.iter().map(|e| (e.index, e.term)).collect();
            assert_eq!(got, vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
            assert_eq!(rec.entries[2].data, b"new three");
            assert_eq!(rec.replaced_entries, 3);
            wal.close().await.unwrap();
        });
    }

    /// Writes entries 1..=6 (one commit each) and returns the image of the only segment and
    /// the offset of the last record.
    fn make_log(dir: &Path) -> (Vec<u8>, usize) {
        let d = dir.to_path_buf();
        run(async move {
            let (wal, _) = Wal::open(&d, small()).await.unwrap();
            write_entries(&wal, 1..=6, 1).await;
            wal.close().await.unwrap();
        });
        let image = std::fs::read(segment_path(dir, 1)).unwrap();
        let scan = record::scan_segment(&image).unwrap();
        let last = scan.records.last().unwrap().offset as usize;
        (image, last)
    }

    fn copy_log(from: &Path, to: &Path) {
        crate::log::durable::create_dir_all(to).unwrap();
        for ent in std::fs::read_dir(from).unwrap() {
            let ent = ent.unwrap();
            std::fs::copy(ent.path(), to.join(ent.file_name())).unwrap();
        }
    }

    #[test]
    fn torn_last_record_is_truncated_at_every_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let pristine = tmp.path().join("pristine");
        let (image, last) = make_log(&pristine);
        let l = &image[last..last + 4];
        let payload_end =
            record::HEADER_LEN + u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        let work = tmp.path().join("work");
        let (pristine2, work2) = (pristine.clone(), work.clone());
        run(async move {
            for cut in 0..payload_end {
                for garbage in [false, true] {
                    let _ = std::fs::remove_dir_all(&work2);
                    copy_log(&pristine2, &work2);
                    let seg = segment_path(&work2, 1);
                    let mut img = image.clone();
                    for (i, b) in img[last + cut..last + payload_end].iter_mut().enumerate() {
                        *b = if garbage { 0x5A ^ i as u8 } else { 0 };
                    }
                    let changed = img[last..last + payload_end] != image[last..last + payload_end];
                    std::fs::write(&seg, &img).unwrap();

                    let (wal, rec) = Wal::open(&work2, small()).await.unwrap();
                    if !changed {
                        assert_eq!(idx(&rec), (1..=6).collect::<Vec<_>>());
                        wal.close().await.unwrap();
                        continue;
                    }
                    assert_eq!(idx(&rec), (1..=5).collect::<Vec<_>>(), "cut {cut}");
                    let expect_tail = if cut == 0 && !garbage {
                        None
                    } else {
                        Some((seg.clone(), last as u64))
                    };
                    assert_eq!(
                        rec.truncated_tail, expect_tail,
                        "cut {cut} garbage {garbage}"
                    );
                    // The tail is clean on disk: appending and reopening works.
                    let t = wal.submit(&[entry(6, 2, b"rewritten")]);
                    wal.wait_durable(t).await.unwrap();
                    wal.close().await.unwrap();
                    let (wal, rec) = Wal::open(&work2, small()).await.unwrap();
                    assert_eq!(idx(&rec), (1..=6).collect::<Vec<_>>());
                    assert_eq!(rec.entries[5].term, 2);
                    assert_eq!(rec.truncated_tail, None);
                    wal.close().await.unwrap();
                }
            }
        });
    }

    #[test]
    fn flipped_bit_in_middle_record_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let (mut image, _) = make_log(&dir);
        let scan = record::scan_segment(&image).unwrap();
        let victim = scan.records[2].offset as usize;
        image[victim + record::HEADER_LEN + 3] ^= 0x04;
        let seg = segment_path(&dir, 1);
        std::fs::write(&seg, &image).unwrap();
        run(async move {
            match Wal::open(&dir, small()).await {
                Err(WalError::Corrupt {
                    file,
                    offset,
                    reason,
                }) => {
                    assert_eq!(file, seg);
                    assert_eq!(offset, victim as u64);
                    assert!(reason.contains("CRC"), "{reason}");
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("corruption not detected"),
            }
        });
    }

    #[test]
    fn torn_tail_in_a_full_segment_before_a_later_one_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let opts = WalOptions {
            segment_bytes: 2 * BLOCK,
            ..WalOptions::default()
        };
        let d = dir.clone();
        run(async move {
            let (wal, _) = Wal::open(&d, opts).await.unwrap();
            let big = vec![1u8; 1500];
            for i in 1..=8 {
                let t = wal.submit(&[entry(i, 1, &big)]);
                wal.wait_durable(t).await.unwrap();
            }
            wal.close().await.unwrap();
        });
        // Damage the last record of segment 1.
        let seg1 = segment_path(&dir, 1);
        let mut img = std::fs::read(&seg1).unwrap();
        let scan = record::scan_segment(&img).unwrap();
        let last = scan.records.last().unwrap().offset as usize;
        img[last + 20] ^= 1;
        std::fs::write(&seg1, &img).unwrap();
        run(async move {
            match Wal::open(&dir, opts).await {
                Err(WalError::Corrupt { file, offset, .. }) => {
                    assert_eq!(file, seg1);
                    assert_eq!(offset, last as u64);
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("corruption not detected"),
            }
        });
    }

    #[test]
    fn write_failure_poisons_and_no_space_is_distinct() {
        for (errno, no_space) in [(libc::EIO, false), (libc::ENOSPC, true)] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            run(async move {
                let (wal, _) = Wal::open(&dir, small()).await.unwrap();
                write_entries(&wal, 1..=2, 1).await;
                wal.inject_write_errno(errno);
                let t1 = wal.submit(&[entry(3, 1, b"x")]);
                let t2 = wal.submit(&[entry(4, 1, b"y")]);
                for t in [t1, t2] {
                    let e = wal.wait_durable(t).await.unwrap_err();
                    assert_eq!(matches!(e, WalError::NoSpace { .. }), no_space, "{e}");
                    assert_eq!(matches!(e, WalError::Io { .. }), !no_space, "{e}");
                }
                assert_eq!(wal.durable_ticket(), 2);
                // Refused from now on, and close reports the failure.
                let t = wal.submit(&[entry(5, 1, b"z")]);
                assert!(wal.wait_durable(t).await.is_err());
                assert!(wal.close().await.is_err());
                // Nothing unacknowledged came back.
                let (wal, rec) = Wal::open(&dir, small()).await.unwrap();
                assert_eq!(idx(&rec), vec![1, 2]);
                wal.close().await.unwrap();
            });
        }
    }

    #[test]
    fn oversized_record_poisons() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let opts = WalOptions {
            segment_bytes: 2 * BLOCK,
            ..WalOptions::default()
        };
        run(async move {
            let (wal, _) = Wal::open(&dir, opts).await.unwrap();
            write_entries(&wal, 1..=3, 1).await;
            let huge = vec![0u8; 3 * BLOCK as usize];
            let t = wal.submit(&[entry(4, 1, b"fine"), entry(5, 1, &huge)]);
            assert!(matches!(
                wal.wait_durable(t).await,
                Err(WalError::Record(EncodeError::TooLarge { .. }))
            ));
            let t = wal.submit(&[entry(4, 1, b"later")]);
            assert!(wal.wait_durable(t).await.is_err());
            assert!(wal.close().await.is_err());
            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            assert_eq!(idx(&rec), vec![1, 2, 3]);
            wal.close().await.unwrap();
        });
    }

    #[test]
    fn without_preallocation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let opts = WalOptions {
            segment_bytes: 2 * BLOCK,
            preallocate: false,
            sync: SyncMode::Fdatasync,
        };
        run(async move {
            let (wal, _) = Wal::open(&dir, opts).await.unwrap();
            let big = vec![3u8; 1000];
            for i in 1..=12 {
                let t = wal.submit(&[entry(i, 1, &big)]);
                wal.wait_durable(t).await.unwrap();
            }
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            assert_eq!(idx(&rec), (1..=12).collect::<Vec<_>>());
            wal.close().await.unwrap();
        });
    }

    #[test]
    fn missing_middle_segment_and_bad_options() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let opts = WalOptions {
            segment_bytes: 2 * BLOCK,
            ..WalOptions::default()
        };
        run(async move {
            assert!(matches!(
                Wal::open(
                    &dir,
                    WalOptions {
                        segment_bytes: 5000,
                        ..opts
                    }
                )
                .await,
                Err(WalError::Options(_))
            ));
            let (wal, _) = Wal::open(&dir, opts).await.unwrap();
            let big = vec![1u8; 3000];
            for i in 1..=5 {
                let t = wal.submit(&[entry(i, 1, &big)]);
                wal.wait_durable(t).await.unwrap();
            }
            wal.close().await.unwrap();
            std::fs::remove_file(segment_path(&dir, 2)).unwrap();
            assert!(matches!(
                Wal::open(&dir, opts).await,
                Err(WalError::Corrupt { .. })
            ));
        });
    }

    #[test]
    fn unfinished_segment_is_removed_and_spare_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let opts = WalOptions {
            segment_bytes: 2 * BLOCK,
            ..WalOptions::default()
        };
        run(async move {
            let (wal, _) = Wal::open(&dir, opts).await.unwrap();
            write_entries(&wal, 1..=2, 1).await;
            wal.close().await.unwrap();
            // Segment 2 is the prepared spare; pretend a crash interrupted preparing 3.
            assert_eq!(list_segments(&dir).unwrap(), vec![1, 2]);
            let stale = dir.join(format!("{:020}{TMP_SUFFIX}", 3));
            std::fs::write(&stale, b"half").unwrap();
            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            assert!(!stale.exists());
            assert_eq!(idx(&rec), vec![1, 2]);
            let big = vec![2u8; 3000];
            for i in 3..=6 {
                let t = wal.submit(&[entry(i, 1, &big)]);
                wal.wait_durable(t).await.unwrap();
            }
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(&dir, opts).await.unwrap();
            assert_eq!(idx(&rec), (1..=6).collect::<Vec<_>>());
            // Rotation moved into the recovered spare (2) and prepared 3.
            assert_eq!(rec.segments, 3);
            wal.close().await.unwrap();
        });
    }

    #[test]
    fn io_uring_probe_passes_here() {
        probe_io_uring().unwrap();
    }
}
