//! Reading records from one segment file, checksum by checksum.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::format::{RecordHeader, HEADER_LEN, MAGIC};

/// A segment's file name: its id, zero-padded so names sort in id order.
pub fn file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

pub fn path_of(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id))
}

/// The id of a segment file name, `None` for other files.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// One record read back, with where it sits in its segment.
#[derive(Debug, Clone)]
pub struct Record {
    pub header: RecordHeader,
    pub payload: Vec<u8>,
    pub offset: u64,
    /// Offset just past the record: where the next one starts.
    pub end: u64,
}

#[derive(Debug)]
pub enum Next {
    Record(Record),
    /// Bytes at `offset` are not a valid record; reading resumes at `resume`
    /// (the next valid record, or the end of what may be read).
    Corrupt {
        offset: u64,
        resume: u64,
        reason: &'static str,
    },
    /// Nothing more before the limit (possibly a record still being written).
    End,
}

/// Reads records in order up to a byte limit (a segment being written is
/// read only up to what its writer has committed).
pub struct SegmentReader {
    file: BufReader<File>,
    pos: u64,
    limit: u64,
    sealed: bool,
}

impl SegmentReader {
    pub fn open(path: &Path, offset: u64, limit: u64) -> io::Result<Self> {
        let mut file = crate::files::open_read(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file: BufReader::with_capacity(1 << 20, file),
            pos: offset,
            limit,
            sealed: false,
        })
    }

    /// The segment is complete (a newer one exists): a record running past
    /// its end cannot be one still being written, so it is corrupt (a
    /// damaged length), skipped and reported rather than taken for the end.
    pub fn set_sealed(&mut self, sealed: bool) {
        self.sealed = sealed;
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Where the next record starts.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The next record, a corrupt stretch skipped, or the end.
    pub fn next_record(&mut self) -> io::Result<Next> {
        if self.pos + HEADER_LEN as u64 > self.limit {
            return Ok(Next::End);
        }
        let mut hb = [0u8; HEADER_LEN];
        self.file.read_exact(&mut hb)?;
        let offset = self.pos;
        let Some(header) = RecordHeader::parse(&hb) else {
            return self.resync(offset, "bad record header");
        };
        let end = offset + (HEADER_LEN as u64) + u64::from(header.len);
        if end > self.limit {
            if self.sealed {
                return self.resync(offset, "record length past the end of its sealed segment");
            }
            // a record cut short: torn by a crash, or still being written
            self.file.seek(SeekFrom::Start(offset))?;
            return Ok(Next::End);
        }
        let mut payload = vec![0u8; header.len as usize];
        self.file.read_exact(&mut payload)?;
        if !header.verify(&payload) {
            return self.resync(offset, "checksum mismatch");
        }
        self.pos = end;
        Ok(Next::Record(Record {
            header,
            payload,
            offset,
            end,
        }))
    }

    /// Find the next valid record after a bad one at `offset`: the first
    /// magic after it that starts a record whose checksum holds.
    fn resync(&mut self, offset: u64, reason: &'static str) -> io::Result<Next> {
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(offset + 1))?;
        let mut rest = Vec::new();
        file.take(self.limit - offset - 1).read_to_end(&mut rest)?;
        let mut resume = self.limit;
        let mut i = 0;
        while let Some(found) = find(&rest[i..], &MAGIC) {
            let at = i + found;
            if let Some(h) = rest
                .get(at..at + HEADER_LEN)
                .and_then(|b| RecordHeader::parse(b.try_into().expect("header length")))
            {
                let start = at + HEADER_LEN;
                if let Some(payload) = rest.get(start..start + h.len as usize) {
                    if h.verify(payload) {
                        resume = offset + 1 + at as u64;
                        break;
                    }
                }
            }
            i = at + 1;
        }
        self.pos = resume;
        self.file = BufReader::with_capacity(1 << 20, self.file.get_ref().try_clone()?);
        self.file.seek(SeekFrom::Start(resume))?;
        Ok(Next::Corrupt {
            offset,
            resume,
            reason,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
