//! Appending batches: sequence numbers, segment rolling, fsync policy and
//! the size bound.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, warn};
use vigil_schema::{EventKind, LossReport};

use crate::format::{Encoding, RecordHeader, SegmentHeader, FORMAT_VERSION, MAX_PAYLOAD};
use crate::segment::{self, Next, SegmentReader};
use crate::{SegmentMeta, Spool, SpoolCounters, State};

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every record: nothing acknowledged by the writer is lost on power failure.
    Always,
    /// At most this long after a record (a crash of the machine loses at most that much).
    Interval(Duration),
    /// When the kernel decides. A crash of the collector alone loses nothing.
    Never,
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub dir: PathBuf,
    pub host_id: String,
    /// Bound on the bytes of all segments; the oldest unread are evicted beyond it.
    pub max_bytes: u64,
    /// A segment is closed and a new one started beyond this size.
    pub segment_bytes: u64,
    pub fsync: Fsync,
    /// Group given to the directory (setgid, so its files take it too):
    /// who may read the spool besides its owner. `None`: the owner only.
    pub group: Option<u32>,
}

/// What a restart found in the spool directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub batches: u64,
    pub events: u64,
    pub corrupt_records: u64,
    /// Bytes cut from the end of the newest segment: a record torn by a crash.
    pub torn_bytes: u64,
}

/// The result of one append.
#[derive(Debug)]
pub struct Appended {
    pub seq: u64,
    pub bytes: u64,
    /// Unread batches evicted to keep the bound, one report per segment and kind.
    pub evicted: Vec<LossReport>,
}

pub struct SpoolWriter {
    spool: Arc<Spool>,
    opts: WriterOptions,
    /// Held for the writer's lifetime: one writer per spool directory.
    _lock: File,
    file: File,
    active: u64,
    len: u64,
    next_seq: BTreeMap<EventKind, u64>,
    last_sync: Instant,
    unsynced: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock_dir(opts: &WriterOptions) -> io::Result<File> {
    let path = opts.dir.join("lock");
    let file = crate::files::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // SAFETY: flock on an fd we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "spool {} is in use by another collector ({e})",
                opts.dir.display()
            ),
        ));
    }
    Ok(file)
}

fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SpoolWriter {
    /// Open (or create) a spool directory, recovering what a previous run left:
    /// segments, sequence numbers, and a record torn by a crash at the end.
    pub fn open(opts: WriterOptions) -> io::Result<(Self, Recovery)> {
        crate::files::prepare_dir(&opts.dir, opts.group)?;
        let lock = lock_dir(&opts)?;
        let mut ids: Vec<u64> = std::fs::read_dir(&opts.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| segment::parse_name(&e.file_name().to_string_lossy()))
            .collect();
        ids.sort_unstable();

        let mut recovery = Recovery::default();
        let mut state = State::default();
        let mut next_seq: BTreeMap<EventKind, u64> =
            EventKind::ALL.iter().map(|k| (*k, 1)).collect();
        let last = ids.last().copied();
        for id in &ids {
            let path = segment::path_of(&opts.dir, *id);
            let len = std::fs::metadata(&path)?.len();
            let mut reader = SegmentReader::open(&path, 0, len)?;
            reader.set_sealed(Some(*id) != last);
            let mut meta = SegmentMeta {
                sealed: true,
                ..Default::default()
            };
            let mut valid_end = 0;
            loop {
                match reader.next_record()? {
                    Next::Record(r) => {
                        valid_end = r.end;
                        if let (true, Some(kind)) = (r.header.is_batch(), r.header.kind()) {
                            meta.kinds
                                .entry(kind.code())
                                .or_default()
                                .add(r.header.seq, u64::from(r.header.events));
                            let next = next_seq.entry(kind).or_insert(1);
                            *next = (*next).max(r.header.seq + 1);
                            recovery.batches += 1;
                            recovery.events += u64::from(r.header.events);
                        } else if let Ok(h) = serde_json::from_slice::<SegmentHeader>(&r.payload) {
                            for (name, n) in h.next_seq {
                                if let Some(kind) = EventKind::from_name(&name) {
                                    let next = next_seq.entry(kind).or_insert(1);
                                    *next = (*next).max(n);
                                }
                            }
                        }
                    }
                    Next::Corrupt { resume, .. } if resume < len => {
                        recovery.corrupt_records += 1;
                    }
                    // a bad stretch up to the end, or a record cut short
                    Next::Corrupt { .. } | Next::End => break,
                }
            }
            if valid_end < len && Some(*id) == last {
                // the newest segment ends in a record torn by a crash: cut it
                // off, so the numbers it would have used are reused, not skipped
                crate::files::options()
                    .write(true)
                    .open(&path)?
                    .set_len(valid_end)?;
                recovery.torn_bytes += len - valid_end;
                warn!(segment = %path.display(), bytes = len - valid_end, "spool: cut a torn record off the newest segment");
            }
            meta.bytes = if Some(*id) == last { valid_end } else { len };
            state.segments.insert(*id, meta);
        }
        recovery.segments = ids.len();

        let active = last.map_or(1, |id| id + 1);
        let spool = Arc::new(Spool::new(opts.dir.clone(), state));
        SpoolCounters::add(&spool.counters.torn_bytes, recovery.torn_bytes);
        // corrupt records are counted by the reader that skips them, not here
        let (file, len) = Self::create_segment(&opts, &spool, active, &next_seq)?;
        let writer = Self {
            spool,
            opts,
            _lock: lock,
            file,
            active,
            len,
            next_seq,
            last_sync: Instant::now(),
            unsynced: false,
        };
        writer.update_bytes();
        Ok((writer, recovery))
    }

    fn create_segment(
        opts: &WriterOptions,
        spool: &Spool,
        id: u64,
        next_seq: &BTreeMap<EventKind, u64>,
    ) -> io::Result<(File, u64)> {
        let path = segment::path_of(&opts.dir, id);
        let mut file = crate::files::options()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let header = SegmentHeader {
            format: FORMAT_VERSION,
            host_id: opts.host_id.clone(),
            next_seq: next_seq
                .iter()
                .map(|(k, n)| (k.as_str().to_string(), *n))
                .collect(),
            created_ms: now_ms(),
        }
        .encode();
        let written = file.write_all(&header).and_then(|()| {
            if opts.fsync != Fsync::Never {
                file.sync_data()?;
                sync_dir(&opts.dir)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            // a file left half made (a full disk) would refuse every later
            // roll (create_new) even once there is room again
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let len = header.len() as u64;
        spool.state().segments.insert(
            id,
            SegmentMeta {
                bytes: len,
                sealed: false,
                kinds: BTreeMap::new(),
            },
        );
        Ok((file, len))
    }

    pub fn spool(&self) -> Arc<Spool> {
        self.spool.clone()
    }

    /// The sequence number the next batch of `kind` will get.
    pub fn next_seq(&self, kind: EventKind) -> u64 {
        self.next_seq.get(&kind).copied().unwrap_or(1)
    }

    /// Append one batch as the next of its kind: its sequence number is
    /// [`next_seq`](Self::next_seq), which the payload may carry.
    pub fn append(
        &mut self,
        kind: EventKind,
        encoding: Encoding,
        events: u32,
        payload: &[u8],
    ) -> io::Result<Appended> {
        let seq = self.next_seq(kind);
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "batch of {} bytes exceeds the spool's record limit",
                    payload.len()
                ),
            ));
        }
        let record = RecordHeader::batch(kind, encoding, seq, events).encode(payload);
        if self.len + record.len() as u64 > self.opts.segment_bytes {
            self.roll()?;
        }
        if let Err(e) = self.file.write_all(&record) {
            // leave no partial record behind for readers to trip on
            self.file.set_len(self.len)?;
            self.file.seek(SeekFrom::Start(self.len))?;
            return Err(e);
        }
        self.len += record.len() as u64;
        self.unsynced = true;
        self.next_seq.insert(kind, seq + 1);
        {
            let mut st = self.spool.state();
            let meta = st.segments.entry(self.active).or_default();
            meta.bytes = self.len;
            meta.kinds
                .entry(kind.code())
                .or_default()
                .add(seq, u64::from(events));
        }
        let c = &self.spool.counters;
        SpoolCounters::add(&c.batches_spooled, 1);
        SpoolCounters::add(&c.events_spooled, u64::from(events));
        match self.opts.fsync {
            Fsync::Always => self.sync()?,
            Fsync::Interval(_) => self.sync_if_due()?,
            Fsync::Never => {}
        }
        let evicted = self.enforce_bound();
        Ok(Appended {
            seq,
            bytes: record.len() as u64,
            evicted,
        })
    }

    /// Force appended records to disk now.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Under `Fsync::Interval`, sync when the interval has passed (call this
    /// periodically so a quiet spool is synced too).
    pub fn sync_if_due(&mut self) -> io::Result<()> {
        if let Fsync::Interval(every) = self.opts.fsync {
            if self.unsynced && self.last_sync.elapsed() >= every {
                self.sync()?;
            }
        }
        Ok(())
    }

    /// Close the current segment and start the next.
    fn roll(&mut self) -> io::Result<()> {
        if self.opts.fsync != Fsync::Never {
            self.sync()?;
        }
        // sealed only once the next one exists: a failed roll leaves the
        // current segment the one being written
        let next = self.active + 1;
        let (file, len) = Self::create_segment(&self.opts, &self.spool, next, &self.next_seq)?;
        if let Some(meta) = self.spool.state().segments.get_mut(&self.active) {
            meta.sealed = true;
        }
        self.file = file;
        self.active = next;
        self.len = len;
        Ok(())
    }

    /// Delete segments until the spool fits its bound: oldest first, never
    /// the one being written nor those the consumer has in hand.
    /// Also publishes the spool's size to its counters.
    fn enforce_bound(&mut self) -> Vec<LossReport> {
        let mut reports = Vec::new();
        let mut st = self.spool.state();
        let mut total = st.total_bytes();
        while total > self.opts.max_bytes {
            let pinned = st.pinned;
            let victim = st.segments.iter().find_map(|(id, m)| {
                let in_hand = pinned.is_some_and(|(lo, hi)| (lo..=hi).contains(id));
                (m.sealed && !in_hand).then_some(*id)
            });
            let Some(id) = victim else {
                break; // everything left is in use; the bound is exceeded for now
            };
            let meta = st.segments.remove(&id).expect("victim exists");
            total -= meta.bytes;
            let path = segment::path_of(&self.opts.dir, id);
            if let Err(e) = std::fs::remove_file(&path) {
                error!(segment = %path.display(), error = %e, "spool: cannot delete an evicted segment");
            }
            let shipped = pinned.is_some_and(|(lo, _)| id < lo);
            let c = &self.spool.counters;
            if shipped {
                continue;
            }
            if !st.consumer {
                SpoolCounters::add(&c.retired_segments, 1);
                continue;
            }
            for (code, range) in &meta.kinds {
                SpoolCounters::add(&c.evicted_batches, range.batches);
                SpoolCounters::add(&c.evicted_events, range.events);
                reports.push(LossReport {
                    lost_kind: EventKind::from_code(*code)
                        .map_or("unknown", |k| k.as_str())
                        .to_string(),
                    first_seq: range.first_seq,
                    last_seq: range.last_seq,
                    batches: range.batches,
                    events: range.events,
                    reason: "spool_full".into(),
                });
            }
        }
        drop(st);
        self.spool
            .counters
            .bytes
            .store(total, std::sync::atomic::Ordering::Relaxed);
        if !reports.is_empty() {
            let events: u64 = reports.iter().map(|r| r.events).sum();
            warn!(
                events,
                max_bytes = self.opts.max_bytes,
                "spool full: evicted unshipped batches"
            );
        }
        reports
    }

    fn update_bytes(&self) {
        let total = self.spool.state().total_bytes();
        self.spool
            .counters
            .bytes
            .store(total, std::sync::atomic::Ordering::Relaxed);
    }
}
