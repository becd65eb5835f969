//! One pass over every segment of a log: what each holds, where it is damaged, and which
//! entries make up the log a starting member would rebuild (the *kept* log).
//!
//! The rules are recovery's (`record::scan_segment`, `record::plan_recovery`,
//! `record::Replay`), applied without repairing anything: only the last segment holding data
//! may end torn; corruption anywhere, a torn tail before the last data segment, a missing
//! segment or an empty segment before data are damage. Records after the first damage are
//! *untrusted*: a member would refuse to start, so they take no part in the kept log (the
//! dump still prints them).
//!
//! Only positions are kept in memory (index, term, offset: 24 bytes an entry); the data is read
//! again by [`Survey::visit`] one segment at a time, which bounds memory by the largest
//! segment.

use std::path::PathBuf;

use crate::log::record::{
    self, HardStateRecord, OwnedRecord, RecoveredEntry, Replay, ScannedRecord, SegmentTail, Slot,
};

use super::layout::{self, SegmentFile};
use super::InspectError;

/// Where an entry record lies in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPos {
    pub index: u64,
    pub term: u64,
    pub offset: u64,
}

/// How a segment ends after its last valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Zeros to the end.
    Clean,
    /// An interrupted write from `offset` (a member zeroes it at start).
    Torn {
        offset: u64,
        dirty_until: u64,
        reason: &'static str,
    },
    /// Proven corruption at `offset`; the records before it are valid.
    Corrupt { offset: u64, reason: String },
    /// The file could not be read at all.
    Unreadable(String),
}

/// What one segment holds.
#[derive(Clone, Debug)]
pub struct SegmentSummary {
    pub file: SegmentFile,
    pub entries: Vec<EntryPos>,
    pub hard_states: usize,
    pub last_hard_state: Option<HardStateRecord>,
    /// Offset just past the last valid record.
    pub end: u64,
    pub tail: Tail,
}

impl SegmentSummary {
    pub fn has_data(&self) -> bool {
        !self.entries.is_empty() || self.hard_states > 0 || self.tail != Tail::Clean
    }
    pub fn records(&self) -> usize {
        self.entries.len() + self.hard_states
    }
}

/// A finding about one segment (or the segment sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Index into `Survey::segments`.
    pub segment: usize,
    pub offset: Option<u64>,
    pub reason: String,
    /// False for a torn tail of the last data segment: normal after a crash, and repaired at
    /// start.
    pub damage: bool,
}

/// Entries missing between two kept entries (the log jumps from `after` to `next`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub after: u64,
    pub next: u64,
    pub segment: usize,
    pub offset: u64,
}

/// Raft rewrote the log from `index` on (a new leader's entries replace uncommitted ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overwrite {
    pub index: u64,
    pub old_term: u64,
    pub new_term: u64,
    pub dropped: u64,
    pub segment: usize,
    pub offset: u64,
}

/// One kept entry and where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    pub index: u64,
    pub term: u64,
    pub segment: usize,
    pub offset: u64,
}

#[derive(Debug)]
pub struct Survey {
    pub segments: Vec<SegmentSummary>,
    pub findings: Vec<Finding>,
    /// Segments `0..trusted` take part in the kept log (a damaged one with its valid prefix).
    pub trusted: usize,
    /// The log as a starting member rebuilds it: contiguous indexes, in file order.
    pub kept: Vec<Kept>,
    /// The last hard state among trusted records.
    pub hard_state: Option<HardStateRecord>,
    pub gaps: Vec<Gap>,
    pub overwrites: Vec<Overwrite>,
}

/// Whether a record belongs to the kept log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Kept,
    /// Replaced by a later rewrite of its index, or dropped before a gap.
    Superseded,
    /// After damage: not part of any log a member would start from.
    Untrusted,
}

/// What [`Survey::visit`] reports, in file order.
pub enum Visit<'a> {
    Segment(usize, &'a SegmentSummary),
    Record {
        segment: usize,
        offset: u64,
        record: OwnedRecord,
        status: Status,
    },
    /// The segment could not be read again (it changed or went since the survey).
    ReadFailed(usize, String),
    /// After the segment's last record: how it ends.
    End(usize, &'a SegmentSummary),
}

/// Scans one segment image. A corrupt one yields the valid records before the damage.
pub fn scan(image: &[u8]) -> (Vec<ScannedRecord>, u64, Tail) {
    match record::scan_segment(image) {
        Ok(s) => {
            let tail = match s.tail {
                SegmentTail::Clean => Tail::Clean,
                SegmentTail::Torn {
                    reason,
                    dirty_until,
                } => Tail::Torn {
                    offset: s.end,
                    dirty_until,
                    reason,
                },
            };
            (s.records, s.end, tail)
        }
        Err(c) => {
            let records = records_before(image, c.offset);
            (
                records,
                c.offset,
                Tail::Corrupt {
                    offset: c.offset,
                    reason: c.reason,
                },
            )
        }
    }
}

/// The valid records before `end` (where a scan found corruption).
fn records_before(image: &[u8], end: u64) -> Vec<ScannedRecord> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while (off as u64) < end {
        let Slot::Record(raw) = record::read_slot(image, off) else {
            break;
        };
        let Ok(rec) = record::decode(&raw) else { break };
        out.push(ScannedRecord {
            offset: off as u64,
            record: rec,
        });
        off += raw.len;
    }
    out
}

impl Survey {
    /// Reads every segment of `log_dir` once. Fails only when the dir cannot be listed;
    /// unreadable or damaged files are findings.
    pub fn read(log_dir: &std::path::Path) -> Result<Survey, InspectError> {
        let files = layout::segments(log_dir)?;
        let mut segments = Vec::with_capacity(files.len());
        for file in files {
            segments.push(summarize(file));
        }
        Ok(Survey::from_segments(segments))
    }

    fn from_segments(segments: Vec<SegmentSummary>) -> Survey {
        let mut findings = Vec::new();
        let mut trusted = segments.len();
        let last_data = segments.iter().rposition(SegmentSummary::has_data);
        for (i, s) in segments.iter().enumerate() {
            if i > 0 && s.file.seq != segments[i - 1].file.seq.wrapping_add(1) {
                findings.push(Finding {
                    segment: i,
                    offset: None,
                    reason: format!(
                        "segments missing between {:020}.seg and {}",
                        segments[i - 1].file.seq,
                        s.file.name()
                    ),
                    damage: true,
                });
                trusted = trusted.min(i);
            }
            match &s.tail {
                Tail::Clean => {
                    if !s.has_data() && last_data.is_some_and(|l| i < l) {
                        findings.push(Finding {
                            segment: i,
                            offset: Some(0),
                            reason: "empty segment followed by segments holding data".into(),
                            damage: true,
                        });
                        trusted = trusted.min(i + 1);
                    }
                }
                Tail::Torn { offset, reason, .. } => {
                    let last = Some(i) == last_data;
                    findings.push(Finding {
                        segment: i,
                        offset: Some(*offset),
                        reason: if last {
                            format!("torn tail ({reason}): a starting member truncates it")
                        } else {
                            format!("torn write ({reason}) in a segment that is not the last")
                        },
                        damage: !last,
                    });
                    if !last {
                        trusted = trusted.min(i + 1);
                    }
                }
                Tail::Corrupt { offset, reason } => {
                    findings.push(Finding {
                        segment: i,
                        offset: Some(*offset),
                        reason: reason.clone(),
                        damage: true,
                    });
                    trusted = trusted.min(i + 1);
                }
                Tail::Unreadable(why) => {
                    findings.push(Finding {
                        segment: i,
                        offset: None,
                        reason: why.clone(),
                        damage: true,
                    });
                    trusted = trusted.min(i);
                }
            }
        }

        // The kept log, by recovery's own replay rules; `positions` follows `replay.entries`.
        let mut replay = Replay::default();
        let mut positions: Vec<Kept> = Vec::new();
        let (mut gaps, mut overwrites) = (Vec::new(), Vec::new());
        let mut hard_state = None;
        for (i, s) in segments.iter().enumerate().take(trusted) {
            for e in &s.entries {
                if let Some(last) = positions.last() {
                    if e.index > last.index.saturating_add(1) {
                        gaps.push(Gap {
                            after: last.index,
                            next: e.index,
                            segment: i,
                            offset: e.offset,
                        });
                    } else if e.index <= last.index {
                        let first = positions[0].index;
                        let keep = e.index.saturating_sub(first) as usize;
                        overwrites.push(Overwrite {
                            index: e.index,
                            old_term: positions.get(keep).map_or(0, |k| k.term),
                            new_term: e.term,
                            dropped: (positions.len() - keep.min(positions.len())) as u64,
                            segment: i,
                            offset: e.offset,
                        });
                    }
                }
                replay.apply(OwnedRecord::Entry(RecoveredEntry {
                    index: e.index,
                    term: e.term,
                    data: Vec::new(),
                    conf_change: false,
                }));
                positions.truncate(replay.entries.len() - 1);
                positions.push(Kept {
                    index: e.index,
                    term: e.term,
                    segment: i,
                    offset: e.offset,
                });
            }
            if s.last_hard_state.is_some() {
                hard_state = s.last_hard_state;
            }
        }
        Survey {
            segments,
            findings,
            trusted,
            kept: positions,
            hard_state,
            gaps,
            overwrites,
        }
    }

    /// Whether the log has damage (a torn tail of the last segment is not damage).
    pub fn damaged(&self) -> bool {
        self.findings.iter().any(|f| f.damage)
    }

    pub fn first_index(&self) -> Option<u64> {
        self.kept.first().map(|k| k.index)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.kept.last().map(|k| k.index)
    }

    /// Reads the segments again, in order, and reports each record with its status. `wanted`
    /// picks the segments to read (the others are skipped without reading); `f` returns false
    /// to stop.
    pub fn visit(
        &self,
        wanted: impl Fn(usize, &SegmentSummary) -> bool,
        mut f: impl FnMut(Visit<'_>) -> Result<bool, InspectError>,
    ) -> Result<(), InspectError> {
        let mut cursor = 0usize;
        for (i, s) in self.segments.iter().enumerate() {
            if !wanted(i, s) {
                while self.kept.get(cursor).is_some_and(|k| k.segment <= i) {
                    cursor += 1;
                }
                continue;
            }
            if !f(Visit::Segment(i, s))? {
                return Ok(());
            }
            let records = match &s.tail {
                Tail::Unreadable(_) => Vec::new(),
                _ => match layout::read_segment(&s.file.path) {
                    Ok(image) => scan(&image).0,
                    Err(why) => {
                        if !f(Visit::ReadFailed(i, why))? {
                            return Ok(());
                        }
                        Vec::new()
                    }
                },
            };
            for r in records {
                let status = if i >= self.trusted {
                    Status::Untrusted
                } else {
                    match &r.record {
                        OwnedRecord::HardState(_) => Status::Kept,
                        OwnedRecord::Entry(e) => {
                            // Kept entries lie in file order: skip any whose record did not
                            // come back (a file changed since the survey).
                            while self
                                .kept
                                .get(cursor)
                                .is_some_and(|k| (k.segment, k.offset) < (i, r.offset))
                            {
                                cursor += 1;
                            }
                            match self.kept.get(cursor) {
                                Some(k)
                                    if (k.segment, k.offset, k.index) == (i, r.offset, e.index) =>
                                {
                                    cursor += 1;
                                    Status::Kept
                                }
                                _ => Status::Superseded,
                            }
                        }
                    }
                };
                let go_on = f(Visit::Record {
                    segment: i,
                    offset: r.offset,
                    record: r.record,
                    status,
                })?;
                if !go_on {
                    return Ok(());
                }
            }
            if !f(Visit::End(i, s))? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The path of segment `i`, for messages.
    pub fn path(&self, i: usize) -> PathBuf {
        self.segments
            .get(i)
            .map_or_else(PathBuf::new, |s| s.file.path.clone())
    }
}

/// Reads and scans one segment, keeping only positions.
fn summarize(file: SegmentFile) -> SegmentSummary {
    let mut s = SegmentSummary {
        file,
        entries: Vec::new(),
        hard_states: 0,
        last_hard_state: None,
        end: 0,
        tail: Tail::Clean,
    };
    let image = match layout::read_segment(&s.file.path) {
        Ok(image) => image,
        Err(why) => {
            s.tail = Tail::Unreadable(why);
            return s;
        }
    };
    let (records, end, tail) = scan(&image);
    drop(image);
    for r in records {
        match r.record {
            OwnedRecord::Entry(e) => s.entries.push(EntryPos {
                index: e.index,
                term: e.term,
                offset: r.offset,
            }),
            OwnedRecord::HardState(hs) => {
                s.hard_states += 1;
                s.last_hard_state = Some(hs);
            }
        }
    }
    s.end = end;
    s.tail = tail;
    s
}
