//! Reading a spool another process writes: the local detector's source.
//!
//! [`SpoolTail`] needs nothing from the writer but the files: it lists the
//! segment files, reads complete records in order from a [`Position`] (a
//! record still being written is waited for, not misread), moves to the
//! next segment once a newer one exists (the writer seals a segment before
//! it starts the next), and says when segments went before it reached them
//! (evicted or retired by the writer's size bound) so the caller can report
//! the gap — which the per-(host, kind) sequence numbers then measure. The
//! segment it has open is read to its end even if deleted meanwhile. The
//! directory is listed only when that segment has nothing more, not per
//! record. It does not delete anything and does not pin what it has not read.

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
    /// Segments from `from` on were deleted before they were read; reading
    /// goes on at `to`.
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

    /// The next batch. The directory is listed and the segment's length
    /// read only when the open segment has nothing more: not per record.
    pub fn next_batch(&mut self) -> io::Result<Tailed> {
        loop {
            let Some((id, reader)) = &mut self.reader else {
                if let Some(skipped) = self.open_segment()? {
                    return Ok(skipped);
                }
                if self.reader.is_none() {
                    return Ok(Tailed::Idle);
                }
                continue;
            };
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
                        segment: *id,
                        offset,
                        reason,
                    });
                }
                Next::End => {
                    // List first, then measure: once a newer segment exists
                    // this one is sealed, so the length read after is final.
                    let newer = segments(&self.dir)?.into_iter().find(|&n| n > *id);
                    match std::fs::metadata(segment::path_of(&self.dir, *id)) {
                        Ok(m) if m.len() > reader.limit() => {
                            // grown: read on (a partial record ends here again)
                            reader.set_limit(m.len());
                            continue;
                        }
                        // sealed, yet a record runs past its end: a damaged
                        // length, skipped and reported once read as sealed
                        Ok(_)
                            if newer.is_some()
                                && !reader.is_sealed()
                                && reader.pos() < reader.limit() =>
                        {
                            reader.set_sealed(true);
                            continue;
                        }
                        // nothing new, or gone: retired or evicted after it was
                        // read to its end (the open file still held the rest)
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    let Some(next) = newer else {
                        return Ok(Tailed::Idle);
                    };
                    let from = self.pos;
                    self.pos = Position {
                        segment: next,
                        offset: 0,
                    };
                    self.reader = None;
                    // segment ids are consecutive: a jump means some went unread
                    if next != from.segment + 1 {
                        return Ok(Tailed::Skipped { from, to: self.pos });
                    }
                }
            }
        }
    }

    /// Open the segment at the position, or the next one there is. Returns
    /// `Skipped` when the one at the position had gone unread.
    fn open_segment(&mut self) -> io::Result<Option<Tailed>> {
        let ids = segments(&self.dir)?;
        let mut skipped = None;
        if !ids.contains(&self.pos.segment) {
            let Some(&next) = ids.iter().find(|&&id| id > self.pos.segment) else {
                return Ok(None);
            };
            let from = self.pos;
            self.pos = Position {
                segment: next,
                offset: 0,
            };
            if from != Position::default() {
                skipped = Some(Tailed::Skipped { from, to: self.pos });
            }
        }
        let path = segment::path_of(&self.dir, self.pos.segment);
        match std::fs::metadata(&path)
            .and_then(|m| SegmentReader::open(&path, self.pos.offset, m.len()))
        {
            Ok(r) => self.reader = Some((self.pos.segment, r)),
            // deleted between the listing and the open: look again
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(skipped)
    }
}

/// Segment ids in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| segment::parse_name(e.ok()?.file_name().to_str()?))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}
