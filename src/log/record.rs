//! The WAL record format and the pure (sans-IO) half of recovery: encoding, CRC, scanning a
//! segment image, telling a torn tail from corruption, and replaying records into raft state.
//!
//! # Record layout
//!
//! Every record starts at a 16-byte aligned offset of its segment:
//!
//! ```text
//! offset  size  field
//!  0      4     len          payload length in bytes, little endian; 0 = no record here
//!  4      4     crc          crc32c over payload ‖ bytes 0..4 ‖ bytes 8..16 of the header
//!  8      1     kind         1 = Entry, 2 = HardState, 3 = Entry holding a raft
//!                            configuration change (same payload as Entry)
//!  9      3     reserved     zero
//! 12      4     write_start  segment offset of the first record of the disk write that
//!                            carried this record (see "Torn or corrupt" below)
//! 16      len   payload      rkyv archive (root object at its end)
//!   ...         padding      zero, up to the next multiple of 16
//! ```
//!
//! The 16-byte header (rather than the minimal 9 bytes) keeps the payload 16-byte aligned inside
//! a DMA read buffer, so rkyv can access it in place. Segments are pre-zeroed: an all-zero header
//! marks the end of written data.
//!
//! # Torn or corrupt
//!
//! The writer has at most one write in flight, and issues the next one only once the previous is
//! durable (O_DSYNC completion or fdatasync). A crash can therefore damage only the bytes of the
//! last write, and may persist any subset of its blocks (not necessarily a prefix). Every record
//! carries `write_start`, the offset where its write's records begin, covered by its CRC.
//!
//! Scanning a segment stops at the first offset `X` whose slot is not a valid record (all-zero
//! header, bad length, bad CRC, undecodable payload). Then:
//! - every byte from `X` to the end is zero: clean end of data;
//! - otherwise, if some CRC-valid record after `X` has `write_start > X`, that record belongs to a
//!   write issued after the one that covered `X`, which was durable by then: **corrupt**;
//! - otherwise the damage is confined to one write that started at or before `X`, the last one:
//!   **torn**. Only the last segment holding data may end torn (a write that crosses into the
//!   next segment is split, and the first part is durable before the second is issued).
//!
//! Limit: damage (a flipped bit) inside the last write of the log is indistinguishable from a
//! torn write and is truncated as one (and reported), never skipped over silently.

use rkyv::{
    munge::munge,
    rancor::{Failure, Fallible},
    ser::{Allocator, Writer},
    util::AlignedVec,
    vec::{ArchivedVec, VecResolver},
    Archive, Deserialize, Place, Serialize,
};

/// Bytes of a record header.
pub const HEADER_LEN: usize = 16;
/// Records start at multiples of this within a segment.
pub const RECORD_ALIGN: usize = 16;
/// Largest payload a record may carry, whatever the segment size (bounds memory at recovery and
/// the damage a corrupt length field can claim).
pub const MAX_PAYLOAD_LEN: usize = 32 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_CHANGE: u8 = 3;

/// One record to append, borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRecord<'a> {
    /// A raft entry; `data` is opaque here (an rkyv `txn::Batch`, or raft's own entry bytes).
    Entry {
        index: u64,
        term: u64,
        data: &'a [u8],
        /// A raft configuration change (`data` is a protobuf `ConfChangeV2`), not a batch.
        conf_change: bool,
    },
    /// The raft hard state; the last one in the log wins on recovery.
    HardState { term: u64, vote: u64, commit: u64 },
}

/// A raft entry read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredEntry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
    pub conf_change: bool,
}

/// The raft hard state as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardStateRecord {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// A decoded record that owns its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedRecord {
    Entry(RecoveredEntry),
    HardState(HardStateRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("WAL record of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("WAL record serialization failed")]
    Serialize,
}

// ---------------------------------------------------------------------------------------------
// Payloads (rkyv).

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
struct EntryPayload {
    index: u64,
    term: u64,
    data: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
struct HardStatePayload {
    term: u64,
    vote: u64,
    commit: u64,
}

/// Serializes to exactly the archive of `EntryPayload` without copying `data` into a `Vec`
/// first.
struct EntryPayloadRef<'a> {
    index: u64,
    term: u64,
    data: &'a [u8],
}

impl Archive for EntryPayloadRef<'_> {
    type Archived = ArchivedEntryPayload;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        munge!(let ArchivedEntryPayload { index, term, data } = out);
        self.index.resolve((), index);
        self.term.resolve((), term);
        ArchivedVec::<u8>::resolve_from_len(self.data.len(), resolver, data);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for EntryPayloadRef<'_> {
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedVec::<u8>::serialize_from_slice(self.data, serializer)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// Rounds `v` up to a multiple of `align` (a power of two).
pub const fn align_up(v: usize, align: usize) -> usize {
    (v + align - 1) & !(align - 1)
}

/// Total bytes a record with `payload_len` bytes of payload occupies (header and padding).
pub const fn record_len(payload_len: usize) -> usize {
    align_up(HEADER_LEN + payload_len, RECORD_ALIGN)
}

/// Appends `rec` to `out` (whose length must be a multiple of 16) with a *provisional* CRC:
/// the record is complete only after [`seal`], which the writer calls once it knows where the
/// record lands. `max_record_len` bounds the whole record (header and padding included).
/// Returns the bytes appended. On error `out` is left as it was.
pub fn encode(
    rec: &LogRecord<'_>,
    out: &mut Vec<u8>,
    max_record_len: usize,
) -> Result<usize, EncodeError> {
    assert!(
        out.len() % RECORD_ALIGN == 0,
        "records must start 16-byte aligned"
    );
    let limit = max_record_len.min(record_len(MAX_PAYLOAD_LEN));
    if let LogRecord::Entry { data, .. } = rec {
        // Fail fast before copying a huge payload.
        if record_len(data.len()) > limit {
            return Err(EncodeError::TooLarge {
                size: record_len(data.len()),
                limit,
            });
        }
    }
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    // rkyv aligns relative to the writer's position; the payload starts 16-byte aligned within
    // `out`, so the archive is laid out exactly as if serialized alone.
    let res = match *rec {
        LogRecord::Entry {
            index,
            term,
            data,
            conf_change,
        } => rkyv::api::high::to_bytes_in::<_, Failure>(
            &EntryPayloadRef { index, term, data },
            &mut *out,
        )
        .map(|_| {
            if conf_change {
                KIND_CONF_CHANGE
            } else {
                KIND_ENTRY
            }
        }),
        LogRecord::HardState { term, vote, commit } => rkyv::api::high::to_bytes_in::<_, Failure>(
            &HardStatePayload { term, vote, commit },
            &mut *out,
        )
        .map(|_| KIND_HARD_STATE),
    };
    let kind = match res {
        Ok(kind) => kind,
        Err(_) => {
            out.truncate(start);
            return Err(EncodeError::Serialize);
        }
    };
    let payload_len = out.len() - start - HEADER_LEN;
    let total = record_len(payload_len);
    if total > limit {
        out.truncate(start);
        return Err(EncodeError::TooLarge { size: total, limit });
    }
    // payload_len <= MAX_PAYLOAD_LEN < u32::MAX, checked just above.
    let len32 = payload_len as u32;
    let provisional = crc32c::crc32c(&out[start + HEADER_LEN..]);
    out.resize(start + total, 0);
    let h = &mut out[start..start + HEADER_LEN];
    h[0..4].copy_from_slice(&len32.to_le_bytes());
    h[4..8].copy_from_slice(&provisional.to_le_bytes());
    h[8] = kind;
    Ok(total)
}

/// Total length of the (trusted, writer-built) record at the start of `rec`.
pub fn encoded_len(rec: &[u8]) -> usize {
    let len = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize;
    record_len(len)
}

/// Completes a record built by [`encode`]: stores `write_start` and the final CRC.
pub fn seal(rec: &mut [u8], write_start: u32) {
    rec[12..16].copy_from_slice(&write_start.to_le_bytes());
    let provisional = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
    let crc = header_crc(provisional, &rec[..HEADER_LEN]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Continues the payload CRC over the header fields it protects (everything but the CRC).
fn header_crc(payload_crc: u32, header: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(payload_crc, &header[0..4]);
    crc32c::crc32c_append(crc, &header[8..HEADER_LEN])
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// A record whose header and CRC check out.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub kind: u8,
    pub write_start: u32,
    pub payload: &'a [u8],
    /// Bytes the record occupies, header and padding included.
    pub len: usize,
}

/// What a 16-byte aligned slot of a segment holds.
#[derive(Debug, Clone, Copy)]
pub enum Slot<'a> {
    /// An all-zero header: nothing was written here.
    Empty,
    /// Something that is not a valid record.
    Bad(&'static str),
    Record(RawRecord<'a>),
}

/// Reads the slot at `off` (a multiple of 16) of a segment image; checks header and CRC, not
/// the payload's rkyv structure.
pub fn read_slot(seg: &[u8], off: usize) -> Slot<'_> {
    let Some(rest) = seg.get(off..) else {
        return Slot::Empty;
    };
    let Some(h) = rest.get(..HEADER_LEN) else {
        return if is_zero(rest) {
            Slot::Empty
        } else {
            Slot::Bad("truncated record header")
        };
    };
    if is_zero(h) {
        return Slot::Empty;
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let kind = h[8];
    let write_start = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if len == 0 {
        return Slot::Bad("zero length in a non-zero header");
    }
    if len > MAX_PAYLOAD_LEN {
        return Slot::Bad("record length over the limit");
    }
    let total = record_len(len);
    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
        return Slot::Bad("record runs past the end of the segment");
    };
    if rest.len() < total {
        return Slot::Bad("record runs past the end of the segment");
    }
    if !matches!(kind, KIND_ENTRY | KIND_HARD_STATE | KIND_CONF_CHANGE) {
        return Slot::Bad("unknown record kind");
    }
    if h[9..12] != [0, 0, 0] {
        return Slot::Bad("reserved header bytes are set");
    }
    if header_crc(crc32c::crc32c(payload), h) != crc {
        return Slot::Bad("CRC mismatch");
    }
    if write_start as usize > off {
        return Slot::Bad("write start lies after the record");
    }
    Slot::Record(RawRecord {
        kind,
        write_start,
        payload,
        len: total,
    })
}

/// Decodes a CRC-checked record into owned form (validating the rkyv structure).
pub fn decode(raw: &RawRecord<'_>) -> Result<OwnedRecord, &'static str> {
    // rkyv needs the archive aligned; segment images read for recovery are, other buffers may
    // not be.
    let aligned;
    let bytes = if (raw.payload.as_ptr() as usize) % RECORD_ALIGN == 0 {
        raw.payload
    } else {
        let mut v = AlignedVec::<RECORD_ALIGN>::with_capacity(raw.payload.len());
        v.extend_from_slice(raw.payload);
        aligned = v;
        aligned.as_slice()
    };
    match raw.kind {
        KIND_ENTRY | KIND_CONF_CHANGE => {
            let a = rkyv::access::<ArchivedEntryPayload, Failure>(bytes)
                .map_err(|_| "entry payload fails validation")?;
            Ok(OwnedRecord::Entry(RecoveredEntry {
                index: a.index.to_native(),
                term: a.term.to_native(),
                data: a.data.as_slice().to_vec(),
                conf_change: raw.kind == KIND_CONF_CHANGE,
            }))
        }
        KIND_HARD_STATE => {
            let a = rkyv::access::<ArchivedHardStatePayload, Failure>(bytes)
                .map_err(|_| "hard state payload fails validation")?;
            Ok(OwnedRecord::HardState(HardStateRecord {
                term: a.term.to_native(),
                vote: a.vote.to_native(),
                commit: a.commit.to_native(),
            }))
        }
        _ => Err("unknown record kind"),
    }
}

/// Bytes examined at a time when looking for non-zero data; OR-folding a fixed-size chunk
/// vectorizes, where a short-circuiting byte loop does not (segments are mostly zeros).
const ZERO_SCAN_CHUNK: usize = 256;

fn or_fold(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a | x)
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(ZERO_SCAN_CHUNK).all(|c| or_fold(c) == 0)
}

fn first_nonzero(b: &[u8]) -> Option<usize> {
    let mut base = 0;
    for c in b.chunks(ZERO_SCAN_CHUNK) {
        if or_fold(c) != 0 {
            return c.iter().position(|&x| x != 0).map(|i| base + i);
        }
        base += c.len();
    }
    None
}

fn last_nonzero(b: &[u8]) -> Option<usize> {
    let mut end = b.len();
    for c in b.rchunks(ZERO_SCAN_CHUNK) {
        let start = end - c.len();
        if or_fold(c) != 0 {
            return c.iter().rposition(|&x| x != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Scanning one segment.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    pub offset: u64,
    pub record: OwnedRecord,
}

/// How a segment ends after its last valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentTail {
    /// Every byte after `end` is zero.
    Clean,
    /// Bytes of an interrupted write follow `end` (see the module docs); they reach up to
    /// `dirty_until` (exclusive) and must be zeroed before appending.
    Torn {
        reason: &'static str,
        dirty_until: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub records: Vec<ScannedRecord>,
    /// Offset just past the last valid record: where the next append goes.
    pub end: u64,
    pub tail: SegmentTail,
}

impl SegmentScan {
    /// Whether anything at all was written in this segment.
    pub fn has_data(&self) -> bool {
        !self.records.is_empty() || self.tail != SegmentTail::Clean
    }
}

/// Proven corruption inside one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCorrupt {
    pub offset: u64,
    pub reason: String,
}

/// Scans a whole segment image (bytes past the end of a short file count as zero).
pub fn scan_segment(seg: &[u8]) -> Result<SegmentScan, ScanCorrupt> {
    let mut records = Vec::new();
    let mut off = 0usize;
    let mut prev_write_start = 0u32;
    let mut stop = "zeroed record header";
    while off < seg.len() {
        match read_slot(seg, off) {
            Slot::Empty => break,
            Slot::Bad(reason) => {
                stop = reason;
                break;
            }
            Slot::Record(raw) => {
                if raw.write_start < prev_write_start {
                    stop = "write start goes backwards";
                    break;
                }
                match decode(&raw) {
                    Ok(record) => records.push(ScannedRecord {
                        offset: off as u64,
                        record,
                    }),
                    Err(reason) => {
                        stop = reason;
                        break;
                    }
                }
                prev_write_start = raw.write_start;
                off += raw.len;
            }
        }
    }
    let end = off.min(seg.len());
    let rest = &seg[end..];
    let Some(last) = last_nonzero(rest) else {
        return Ok(SegmentScan {
            records,
            end: end as u64,
            tail: SegmentTail::Clean,
        });
    };
    let dirty_until = end + last + 1;
    // Look for a valid record from a later write anywhere in the damaged region.
    let mut p = end + RECORD_ALIGN;
    while p < dirty_until {
        let Some(nz) = first_nonzero(&seg[p..dirty_until]) else {
            break;
        };
        let q = (p + nz) & !(RECORD_ALIGN - 1);
        p = q.max(p);
        match read_slot(seg, p) {
            Slot::Record(raw) if raw.write_start as usize > end => {
                return Err(ScanCorrupt {
                    offset: end as u64,
                    reason: format!(
                        "{stop} at offset {end}, followed by a valid record at offset {p} from a \
                         later write (started at offset {})",
                        raw.write_start
                    ),
                });
            }
            Slot::Record(raw) => p += raw.len,
            _ => p += RECORD_ALIGN,
        }
    }
    Ok(SegmentScan {
        records,
        end: end as u64,
        tail: SegmentTail::Torn {
            reason: stop,
            dirty_until: dirty_until as u64,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Across segments.

/// Where appends resume and what to repair, given every segment's scan in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Index of the segment to append to (the last one holding data, or 0).
    pub active: usize,
    /// A torn tail in the active segment to zero out.
    pub truncate: Option<Truncation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment: usize,
    pub offset: u64,
    pub dirty_until: u64,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCorrupt {
    pub segment: usize,
    pub offset: u64,
    pub reason: String,
}

/// Applies the cross-segment rules: only the last segment holding data may end torn, no empty
/// segment may precede one holding data; empty segments after it are preallocated spares.
pub fn plan_recovery(scans: &[SegmentScan]) -> Result<RecoveryPlan, PlanCorrupt> {
    let Some(last) = scans.iter().rposition(SegmentScan::has_data) else {
        return Ok(RecoveryPlan {
            active: 0,
            truncate: None,
        });
    };
    for (i, s) in scans.iter().enumerate().take(last) {
        if !s.has_data() {
            return Err(PlanCorrupt {
                segment: i,
                offset: 0,
                reason: "empty segment followed by segments holding data".into(),
            });
        }
        if let SegmentTail::Torn { reason, .. } = s.tail {
            return Err(PlanCorrupt {
                segment: i,
                offset: s.end,
                reason: format!("{reason} (not the last segment)"),
            });
        }
    }
    let s = &scans[last];
    let truncate = match s.tail {
        SegmentTail::Clean => None,
        SegmentTail::Torn {
            reason,
            dirty_until,
        } => Some(Truncation {
            segment: last,
            offset: s.end,
            dirty_until,
            reason,
        }),
    };
    Ok(RecoveryPlan {
        active: last,
        truncate,
    })
}

// ---------------------------------------------------------------------------------------------
// Replay.

/// Raft state rebuilt from records in log order.
///
/// Raft truncates its log by appending entries whose index is at or below the last one: the
/// later record wins and every entry at or after its index is dropped (`replaced` counts them).
/// An index past `last + 1` (a gap: entries appended after a snapshot was installed) drops
/// everything before it (`gap_resets` counts such gaps); the snapshot covers those entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Contiguous, ascending indexes.
    pub entries: Vec<RecoveredEntry>,
    pub hard_state: Option<HardStateRecord>,
    pub replaced: u64,
    pub gap_resets: u64,
}

impl Replay {
    pub fn apply(&mut self, rec: OwnedRecord) {
        match rec {
            OwnedRecord::HardState(hs) => self.hard_state = Some(hs),
            OwnedRecord::Entry(e) => {
                if let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) {
                    let (first, last) = (first.index, last.index);
                    if last.checked_add(1) != Some(e.index) {
                        let keep = if e.index > last {
                            self.gap_resets += 1;
                            0
                        } else {
                            // e.index <= last, so e.index - first < len when e.index >= first.
                            e.index.saturating_sub(first) as usize
                        };
                        self.replaced += (self.entries.len() - keep) as u64;
                        self.entries.truncate(keep);
                    }
                }
                self.entries.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    /// Builds a segment image: each inner slice is one write (group commit).
    fn build(writes: &[&[LogRecord<'_>]], seg_len: usize) -> (Vec<u8>, Vec<usize>) {
        let mut seg = Vec::new();
        let mut offsets = Vec::new();
        for w in writes {
            let write_start = seg.len();
            for r in *w {
                let at = seg.len();
                encode(r, &mut seg, LIMIT).unwrap();
                seal(&mut seg[at..], write_start as u32);
                offsets.push(at);
            }
        }
        assert!(seg.len() <= seg_len);
        seg.resize(seg_len, 0);
        (seg, offsets)
    }

    fn entry(index: u64, data: &[u8]) -> LogRecord<'_> {
        LogRecord::Entry {
            index,
            term: 7,
            data,
            conf_change: false,
        }
    }

    fn indexes(scan: &SegmentScan) -> Vec<u64> {
        scan.records
            .iter()
            .filter_map(|r| match &r.record {
                OwnedRecord::Entry(e) => Some(e.index),
                OwnedRecord::HardState(_) => None,
            })
            .collect()
    }

    #[test]
    fn round_trip_entry_and_hard_state() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let hs = LogRecord::HardState {
            term: 3,
            vote: 2,
            commit: u64::MAX,
        };
        let cc = LogRecord::Entry {
            index: 7,
            term: 7,
            data: b"conf",
            conf_change: true,
        };
        let (seg, offs) = build(&[&[entry(5, &data), hs, entry(6, b""), cc]], 8192);
        let scan = scan_segment(&seg).unwrap();
        assert_eq!(scan.tail, SegmentTail::Clean);
        assert_eq!(scan.records.len(), 4);
        assert_eq!(scan.records[1].offset as usize, offs[1]);
        assert_eq!(
            scan.records[0].record,
            OwnedRecord::Entry(RecoveredEntry {
                index: 5,
                term: 7,
                data: data.clone(),
                conf_change: false,
            })
        );
        assert_eq!(
            scan.records[3].record,
            OwnedRecord::Entry(RecoveredEntry {
                index: 7,
                term: 7,
                data: b"conf".to_vec(),
                conf_change: true,
            })
        );
        assert_eq!(
            scan.records[1].record,
            OwnedRecord::HardState(HardStateRecord {
                term: 3,
                vote: 2,
                commit: u64::MAX
            })
        );
        assert_eq!(scan.end as usize, offs[3] + encoded_len(&seg[offs[3]..]));
        for o in offs {
            assert_eq!(o % RECORD_ALIGN, 0);
        }
    }

    #[test]
    fn borrowed_entry_archive_matches_owned() {
        let data = b"hello, raft".to_vec();
        let owned = rkyv::to_bytes::<Failure>(&EntryPayload {
            index: 9,
            term: 4,
            data: data.clone(),
        })
        .unwrap();
        let mut out = vec![0u8; HEADER_LEN];
        rkyv::api::high::to_bytes_in::<_, Failure>(
            &EntryPayloadRef {
                index: 9,
                term: 4,
                data: &data,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[HEADER_LEN..], owned.as_slice());
    }

    #[test]
    fn unaligned_buffer_decodes() {
        let (seg, _) = build(&[&[entry(1, b"abc")]], 64);
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&seg);
        let Slot::Record(raw) = read_slot(&shifted[1..], 0) else {
            panic!("expected a record")
        };
        assert!(matches!(decode(&raw), Ok(OwnedRecord::Entry(e)) if e.data == b"abc"));
    }

    #[test]
    fn too_large_is_refused_and_leaves_buffer_intact() {
        let mut out = Vec::new();
        encode(&entry(1, b"x"), &mut out, LIMIT).unwrap();
        let before = out.clone();
        let big = vec![0u8; 200];
        let err = encode(&entry(2, &big), &mut out, 128).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { limit: 128, .. }));
        assert_eq!(out, before);
        // A payload that fits as data but not once framed.
        let err = encode(&entry(2, &[0u8; 100]), &mut out, 128).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { .. }));
        assert_eq!(out, before);
    }

    /// A crash in the middle of the last write: every prefix of the last record, followed by
    /// zeros (unwritten) or by garbage, is a torn tail; all records before it survive.
    #[test]
    fn torn_last_record_at_every_byte() {
        let (seg, offs) = build(
            &[
                &[entry(1, b"one")],
                &[entry(2, b"two two")],
                &[entry(3, &[9u8; 77])],
            ],
            4096,
        );
        let last = offs[2];
        let last_len = encoded_len(&seg[last..]);
        // Bytes past the payload are padding, never read: damage there is harmless.
        let l = &seg[last..last + 4];
        let payload_end = HEADER_LEN + u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        for cut in 0..payload_end {
            for garbage in [false, true] {
                let mut s = seg.clone();
                for (i, b) in s[last + cut..last + last_len].iter_mut().enumerate() {
                    *b = if garbage {
                        (i as u8).wrapping_mul(31) | 1
                    } else {
                        0
                    };
                }
                let scan = scan_segment(&s).unwrap();
                if s[last..last + payload_end] == seg[last..last + payload_end] {
                    // Zeroing bytes that were zero changes nothing.
                    assert_eq!(indexes(&scan), vec![1, 2, 3]);
                    continue;
                }
                assert_eq!(indexes(&scan), vec![1, 2], "cut {cut} garbage {garbage}");
                assert_eq!(scan.end as usize, last);
                let clean = cut == 0 && !garbage;
                assert_eq!(scan.tail == SegmentTail::Clean, clean, "cut {cut}");
                if let SegmentTail::Torn { dirty_until, .. } = scan.tail {
                    assert!(dirty_until as usize <= last + last_len);
                }
            }
        }
    }

    /// Blocks of the last write may land out of order: a hole at the start of the write with
    /// valid records of the same write after it is still a torn tail.
    #[test]
    fn torn_write_with_hole_is_torn() {
        let recs: Vec<LogRecord<'_>> = (2..40).map(|i| entry(i, &[1u8; 100])).collect();
        let (mut seg, offs) = build(&[&[entry(1, b"first")], &recs], 16384);
        let hole = offs[1];
        seg[hole..hole + 200].fill(0);
        let scan = scan_segment(&seg).unwrap();
        assert_eq!(indexes(&scan), vec![1]);
        assert!(matches!(scan.tail, SegmentTail::Torn { .. }));
    }

    #[test]
    fn flipped_bit_in_middle_record_is_corrupt() {
        let (seg, offs) = build(
            &[
                &[entry(1, b"a")],
                &[entry(2, b"bb")],
                &[entry(3, b"ccc")],
                &[entry(4, b"d")],
            ],
            4096,
        );
        for byte in offs[1]..offs[2] {
            let mut s = seg.clone();
            s[byte] ^= 0x10;
            // A flipped padding byte is harmless (not covered, not read).
            let l = &seg[offs[1]..offs[1] + 4];
            let pad_start =
                offs[1] + HEADER_LEN + u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
            if byte >= pad_start {
                continue;
            }
            let err = scan_segment(&s).unwrap_err();
            assert_eq!(err.offset as usize, offs[1], "byte {byte}: {}", err.reason);
        }
    }

    #[test]
    fn zeroed_block_in_middle_is_corrupt() {
        let (mut seg, offs) = build(
            &[&[entry(1, b"a")], &[entry(2, b"b")], &[entry(3, b"c")]],
            4096,
        );
        let l = encoded_len(&seg[offs[1]..]);
        seg[offs[1]..offs[1] + l].fill(0);
        let err = scan_segment(&seg).unwrap_err();
        assert_eq!(err.offset as usize, offs[1]);
    }

    #[test]
    fn plan_rules() {
        let full = |i: u64| {
            let (s, _) = build(&[&[entry(i, b"x")]], 256);
            scan_segment(&s).unwrap()
        };
        let empty = scan_segment(&[0u8; 256]).unwrap();
        let torn = {
            let (mut s, offs) = build(&[&[entry(9, b"x")], &[entry(10, b"y")]], 256);
            s[offs[1] + 20] ^= 1;
            scan_segment(&s).unwrap()
        };
        // Torn last data segment followed by a spare: fine.
        let p = plan_recovery(&[full(1), torn.clone(), empty.clone()]).unwrap();
        assert_eq!(p.active, 1);
        assert_eq!(p.truncate.as_ref().map(|t| t.segment), Some(1));
        // Torn segment followed by data: corrupt.
        let e = plan_recovery(&[torn.clone(), full(2)]).unwrap_err();
        assert_eq!(e.segment, 0);
        // Empty segment followed by data: corrupt.
        assert_eq!(
            plan_recovery(&[full(1), empty.clone(), full(3)])
                .unwrap_err()
                .segment,
            1
        );
        // Nothing at all.
        assert_eq!(
            plan_recovery(&[empty.clone(), empty]).unwrap(),
            RecoveryPlan {
                active: 0,
                truncate: None
            }
        );
    }

    fn rec(index: u64, term: u64) -> OwnedRecord {
        OwnedRecord::Entry(RecoveredEntry {
            index,
            term,
            data: vec![],
            conf_change: false,
        })
    }

    #[test]
    fn zero_helpers() {
        let mut b = vec![0u8; 1000];
        assert!(is_zero(&b));
        assert_eq!((first_nonzero(&b), last_nonzero(&b)), (None, None));
        for (i, j) in [(0, 0), (3, 999), (255, 256), (511, 700)] {
            b.fill(0);
            b[i] = 1;
            b[j] = 2;
            assert!(!is_zero(&b));
            assert_eq!((first_nonzero(&b), last_nonzero(&b)), (Some(i), Some(j)));
        }
    }

    #[test]
    fn replay_overwrite_and_gap() {
        let mut r = Replay::default();
        for i in 1..=5 {
            r.apply(rec(i, 1));
        }
        r.apply(OwnedRecord::HardState(HardStateRecord {
            term: 1,
            vote: 1,
            commit: 3,
        }));
        // Raft truncation: a new leader rewrites from index 4.
        r.apply(rec(4, 2));
        let got: Vec<(u64, u64)> = r.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
        assert_eq!(r.replaced, 2);
        // Rewrite below the first index drops everything.
        r.apply(rec(0, 3));
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.replaced, 6);
        // A gap resets.
        r.apply(rec(100, 3));
        r.apply(rec(101, 3));
        assert_eq!(
            r.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![100, 101]
        );
        assert_eq!(r.gap_resets, 1);
        assert_eq!(r.hard_state.map(|h| h.commit), Some(3));
    }

    proptest::proptest! {
        #[test]
        fn scan_never_panics_on_garbage(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = scan_segment(&bytes);
        }

        #[test]
        fn round_trip_any(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300), index: u64, term: u64) {
            let (seg, _) = build(&[&[LogRecord::Entry { index, term, data: &data, conf_change: false }]], 1024);
            let scan = scan_segment(&seg).unwrap();
            proptest::prop_assert_eq!(&scan.records[0].record, &OwnedRecord::Entry(RecoveredEntry { index, term, data: data.clone(), conf_change: false }));
        }
    }
}
