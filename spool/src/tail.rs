//! Reading a spool another process writes: the local detector's source.
//!
//! [`SpoolTail`] needs nothing from the writer but the files: it lists the
//! segment files, reads complete records in order from a [`Position`] (a
//! record still being written is waited for, not misread), moves to the
//! next segment once a newer one exists (the writer seals a segment before
//! it starts the next), and says when the segment it was in has gone
//! (evicted or retired by the writer's size bound) so the caller can report
//! the gap — which the per-(host, kind) sequence numbers then measure.
//! It does not delete anything and does not pin what it has not read.

use std::io;
use std::path::{Path, PathBuf};

use crate::reader::Position;
use crate::segment::{self, Next, Record, SegmentReader};

/// What [`SpoolTail::next_batch`] found.
#[derive(Debug)]
pub enum Tailed {
    /// A batch record; `end` is the position just past it.
    Batch { record: Record, end: Position },
    /// A record that failed its checksum was skipped.
    Corrupt {
        segment: u64,
        offset: u64,
        reason: &'static str,
    },
    /// The segment at `from` was deleted before it was read to its end;
    /// reading goes on at `to`.
    Skipped { from: Position, to: Position },
    /// Nothing new yet.
    Idle,
}

pub struct SpoolTail {
    dir: PathBuf,
    pos: Position,
    reader: Option<(u64, SegmentReader)>,
}

impl SpoolTail {
    /// Tail the spool in `dir` from `from` (`Position::default()`: the oldest
    /// segment there is).
    pub fn open(dir: &Path, from: Position) -> Self {
        Self {
            dir: dir.to_path_buf(),
            pos: from,
            reader: None,
        }
    }

    /// Just past the last record returned: where to resume after a restart.
    pub fn position(&self) -> Position {
        self.pos
    }

    fn segments(&self) -> io::Result<Vec<u64>> {
        let mut ids: Vec<u64> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| segment::parse_name(e.ok()?.file_name().to_str()?))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub fn next_batch(&mut self) -> io::Result<Tailed> {
        loop {
            let ids = self.segments()?;
            let Some(&newest) = ids.last() else {
                return Ok(Tailed::Idle);
            };
            if !ids.contains(&self.pos.segment) {
                // start, or the segment went away under us
                let Some(&next) = ids.iter().find(|&&id| id > self.pos.segment) else {
                    return Ok(Tailed::Idle);
                };
                let from = self.pos;
                self.pos = Position {
                    segment: next,
                    offset: 0,
                };
                self.reader = None;
                if from != Position::default() {
                    return Ok(Tailed::Skipped { from, to: self.pos });
                }
            }
            let path = segment::path_of(&self.dir, self.pos.segment);
            let limit = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let reader = match &mut self.reader {
                Some((id, r)) if *id == self.pos.segment => r,
                _ => match SegmentReader::open(&path, self.pos.offset, limit) {
                    Ok(r) => &mut self.reader.insert((self.pos.segment, r)).1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                },
            };
            reader.set_limit(limit);
            match reader.next_record()? {
                Next::Record(record) => {
                    self.pos.offset = record.end;
                    if record.header.is_batch() {
                        let end = self.pos;
                        return Ok(Tailed::Batch { record, end });
                    }
                }
                Next::Corrupt {
                    offset,
                    resume,
                    reason,
                } => {
                    self.pos.offset = resume;
                    return Ok(Tailed::Corrupt {
                        segment: self.pos.segment,
                        offset,
                        reason,
                    });
                }
                Next::End if self.pos.segment < newest => {
                    // sealed: the writer has moved on to a newer segment
                    let next = ids
                        .iter()
                        .copied()
                        .find(|&id| id > self.pos.segment)
                        .unwrap_or(newest);
                    self.pos = Position {
                        segment: next,
                        offset: 0,
                    };
                    self.reader = None;
                }
                Next::End => return Ok(Tailed::Idle),
            }
        }
    }
}
