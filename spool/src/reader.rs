//! The consumer side: read batches in order, acknowledge them, and let
//! fully acknowledged segments go. The position survives restarts in a
//! cursor file (`<name>.cursor`) next to the segments.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::error;

use crate::segment::{self, Next, Record, SegmentReader};
use crate::{Spool, SpoolCounters};

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// What [`SpoolReader::next_batch`] found.
#[derive(Debug)]
pub enum Read {
    /// A batch; acknowledge `end` once it is safely elsewhere.
    Batch { record: Record, end: Position },
    /// A record that failed its checksum was skipped (already counted).
    Corrupt {
        segment: u64,
        offset: u64,
        reason: &'static str,
    },
    /// Nothing new yet.
    Idle,
}

pub struct SpoolReader {
    spool: Arc<Spool>,
    cursor_path: PathBuf,
    acked: Position,
    pos: Position,
    /// The furthest segment read from: batches up to it may be in flight or
    /// delivered even after a rewind, so they stay pinned until acknowledged.
    read_hi: u64,
    open: Option<(u64, SegmentReader)>,
}

impl SpoolReader {
    /// Register as the spool's consumer, starting where the cursor file says
    /// (or at the oldest segment).
    pub fn open(spool: Arc<Spool>, name: &str) -> io::Result<Self> {
        let cursor_path = spool.dir().join(format!("{name}.cursor"));
        let saved = match std::fs::read_to_string(&cursor_path) {
            Ok(text) => parse_cursor(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let start = saved.unwrap_or_default();
        {
            let mut st = spool.state();
            st.consumer = true;
            let first = st.segments.keys().next().copied().unwrap_or(0);
            st.pinned = Some((start.segment.max(first), start.segment.max(first)));
        }
        let mut reader = Self {
            spool,
            cursor_path,
            acked: start,
            pos: start,
            read_hi: start.segment,
            open: None,
        };
        reader.release_acked();
        Ok(reader)
    }

    pub fn acked(&self) -> Position {
        self.acked
    }

    /// The next batch after the read position.
    pub fn next_batch(&mut self) -> io::Result<Read> {
        loop {
            if self.open.is_none() {
                let mut st = self.spool.state();
                let Some((&id, _)) = st.segments.range(self.pos.segment..).next() else {
                    return Ok(Read::Idle);
                };
                if id != self.pos.segment {
                    self.pos = Position {
                        segment: id,
                        offset: 0,
                    };
                }
                self.read_hi = self.read_hi.max(id);
                let lo = st.pinned.map_or(id, |(lo, _)| lo.min(id));
                st.pinned = Some((lo, self.read_hi));
                drop(st);
                let path = segment::path_of(self.spool.dir(), id);
                let reader = SegmentReader::open(&path, self.pos.offset, 0)?;
                self.open = Some((id, reader));
            }
            let (id, reader) = self.open.as_mut().expect("opened above");
            let (limit, sealed) = {
                let st = self.spool.state();
                match st.segments.get(id) {
                    Some(m) => (m.bytes, m.sealed),
                    None => (0, true), // deleted under us: cannot happen while pinned
                }
            };
            reader.set_limit(limit);
            reader.set_sealed(sealed);
            match reader.next_record()? {
                Next::Record(record) => {
                    self.pos.offset = record.end;
                    if record.header.is_batch() {
                        let end = self.pos;
                        return Ok(Read::Batch { record, end });
                    }
                }
                Next::Corrupt {
                    offset,
                    resume,
                    reason,
                } => {
                    self.pos.offset = resume;
                    SpoolCounters::add(&self.spool.counters.corrupt_records, 1);
                    return Ok(Read::Corrupt {
                        segment: *id,
                        offset,
                        reason,
                    });
                }
                Next::End if sealed => {
                    self.pos = Position {
                        segment: *id + 1,
                        offset: 0,
                    };
                    self.open = None;
                }
                Next::End => return Ok(Read::Idle),
            }
        }
    }

    /// Go back to the acknowledged position: what was read since is read again.
    pub fn rewind(&mut self) {
        self.pos = self.acked;
        self.open = None;
    }

    /// Everything up to `upto` is safely elsewhere: segments wholly before it go.
    pub fn ack(&mut self, upto: Position) {
        if upto > self.acked {
            self.acked = upto;
            self.release_acked();
        }
    }

    /// Save the acknowledged position (not synced: after a machine crash
    /// some batches are sent twice, which their sequence numbers reveal).
    pub fn save_cursor(&self) -> io::Result<()> {
        crate::files::replace(
            &self.cursor_path,
            format!("{} {}\n", self.acked.segment, self.acked.offset).as_bytes(),
        )
    }

    fn release_acked(&mut self) {
        let mut st = self.spool.state();
        let done: Vec<u64> = st
            .segments
            .iter()
            .take_while(|(id, m)| {
                m.sealed
                    && (**id < self.acked.segment
                        || (**id == self.acked.segment && self.acked.offset >= m.bytes))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &done {
            st.segments.remove(id);
            let path = segment::path_of(self.spool.dir(), *id);
            if let Err(e) = std::fs::remove_file(&path) {
                error!(segment = %path.display(), error = %e, "spool: cannot delete a shipped segment");
            }
        }
        let lo = st
            .segments
            .range(self.acked.segment..)
            .next()
            .map_or(self.pos.segment, |(id, _)| *id);
        st.pinned = Some((lo, self.read_hi.max(lo)));
        let total = st.total_bytes();
        self.spool.counters.bytes.store(total, Ordering::Relaxed);
    }
}

fn parse_cursor(text: &str) -> Option<Position> {
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Some(Position { segment, offset }),
        _ => None,
    }
}
