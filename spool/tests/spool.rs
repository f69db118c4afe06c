//! The spool's guarantees: ordered, numbered, checksummed, restartable, bounded.

use std::path::Path;

use vigil_schema::EventKind;
use vigil_spool::reader::Read;
use vigil_spool::writer::Recovery;
use vigil_spool::{Encoding, Fsync, SpoolReader, SpoolWriter, WriterOptions};

fn options(dir: &Path, max_bytes: u64, segment_bytes: u64) -> WriterOptions {
    WriterOptions {
        dir: dir.to_path_buf(),
        host_id: "host-a".into(),
        max_bytes,
        segment_bytes,
        fsync: Fsync::Never,
        group: None,
    }
}

fn payload(kind: EventKind, seq: u64) -> Vec<u8> {
    format!("{}-{seq}-{}", kind.as_str(), "x".repeat(200)).into_bytes()
}

fn append(w: &mut SpoolWriter, kind: EventKind, events: u32) -> u64 {
    let seq = w.next_seq(kind);
    w.append(kind, Encoding::Json, events, &payload(kind, seq))
        .unwrap()
        .seq
}

/// Every batch the reader yields, as (kind, seq, events), acknowledging as it goes.
fn drain(r: &mut SpoolReader) -> (Vec<(EventKind, u64, u32)>, usize) {
    let mut got = Vec::new();
    let mut corrupt = 0;
    loop {
        match r.next_batch().unwrap() {
            Read::Batch { record, end } => {
                let kind = record.header.kind().unwrap();
                assert_eq!(record.payload, payload(kind, record.header.seq));
                got.push((kind, record.header.seq, record.header.events));
                r.ack(end);
            }
            Read::Corrupt { .. } => corrupt += 1,
            Read::Idle => return (got, corrupt),
        }
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

#[test]
fn batches_come_back_in_order_numbered_per_kind_and_acked_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, recovery) = SpoolWriter::open(options(dir.path(), 1 << 30, 4096)).unwrap();
    assert_eq!(recovery, Recovery::default());
    let mut expected = Vec::new();
    for i in 0..60u32 {
        let kind = [EventKind::File, EventKind::Process, EventKind::Network][i as usize % 3];
        let seq = append(&mut w, kind, i + 1);
        expected.push((kind, seq, i + 1));
    }
    assert_eq!(
        &expected[..4],
        &[
            (EventKind::File, 1, 1),
            (EventKind::Process, 1, 2),
            (EventKind::Network, 1, 3),
            (EventKind::File, 2, 4)
        ]
    );
    assert!(segment_files(dir.path()) > 3, "small segments roll");
    let mut r = SpoolReader::open(w.spool(), "test").unwrap();
    let (got, corrupt) = drain(&mut r);
    assert_eq!((got, corrupt), (expected, 0));
    // only the segment being written is left
    assert_eq!(segment_files(dir.path()), 1);
}

#[test]
fn restart_resumes_numbering_and_the_saved_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut w, _) = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
        for _ in 0..5 {
            append(&mut w, EventKind::File, 10);
        }
        let mut r = SpoolReader::open(w.spool(), "test").unwrap();
        for _ in 0..3 {
            let Read::Batch { end, .. } = r.next_batch().unwrap() else {
                panic!("batch expected")
            };
            r.ack(end);
        }
        r.save_cursor().unwrap();
    }
    let (mut w, recovery) = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
    assert_eq!((recovery.batches, recovery.events), (5, 50));
    assert_eq!(append(&mut w, EventKind::File, 1), 6);
    assert_eq!(append(&mut w, EventKind::Process, 1), 1);
    let mut r = SpoolReader::open(w.spool(), "test").unwrap();
    let seqs: Vec<u64> = drain(&mut r).0.iter().map(|b| b.1).collect();
    assert_eq!(seqs, [4, 5, 6, 1]);
}

#[test]
fn numbering_survives_when_every_old_segment_was_shipped() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let (mut w, _) = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
        assert_eq!(append(&mut w, EventKind::Network, 1), round * 2 + 1);
        assert_eq!(append(&mut w, EventKind::Network, 1), round * 2 + 2);
        let mut r = SpoolReader::open(w.spool(), "test").unwrap();
        drain(&mut r);
        r.save_cursor().unwrap();
    }
}

#[test]
fn a_torn_last_record_is_cut_off_and_its_number_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut w, _) = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
        for _ in 0..3 {
            append(&mut w, EventKind::File, 1);
        }
    }
    let newest = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let len = std::fs::metadata(&newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(len - 50).unwrap(); // a crash in the middle of the third record
    let (mut w, recovery) = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
    assert_eq!(recovery.batches, 2);
    assert!(recovery.torn_bytes > 0);
    assert_eq!(append(&mut w, EventKind::File, 1), 3);
    let mut r = SpoolReader::open(w.spool(), "test").unwrap();
    let (got, corrupt) = drain(&mut r);
    assert_eq!(got.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(corrupt, 0);
}

#[test]
fn a_corrupt_record_is_skipped_counted_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
    for _ in 0..5 {
        append(&mut w, EventKind::File, 7);
    }
    let seg = dir.path().join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    // the second batch's payload: flip a byte in its middle
    let needle = b"file-2-";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at + 20] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let spool = w.spool();
    let mut r = SpoolReader::open(spool.clone(), "test").unwrap();
    let (got, corrupt) = drain(&mut r);
    assert_eq!(got.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 3, 4, 5]);
    assert_eq!(corrupt, 1);
    assert_eq!(
        spool
            .counters
            .corrupt_records
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_full_spool_evicts_unread_batches_and_counts_them_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // ~250-byte records, 2 KiB segments, 8 KiB bound
    let (mut w, _) = SpoolWriter::open(options(dir.path(), 8 << 10, 2 << 10)).unwrap();
    let spool = w.spool();
    let mut r = SpoolReader::open(spool.clone(), "test").unwrap();
    // the consumer takes the first batch and never acknowledges it (broker down)
    append(&mut w, EventKind::File, 5);
    let Read::Batch { .. } = r.next_batch().unwrap() else {
        panic!("batch expected")
    };
    let mut reports = Vec::new();
    for i in 0..200u32 {
        let kind = if i % 4 == 0 {
            EventKind::Process
        } else {
            EventKind::File
        };
        let a = w
            .append(kind, Encoding::Json, 5, &payload(kind, w.next_seq(kind)))
            .unwrap();
        reports.extend(a.evicted);
    }
    let evicted_events: u64 = reports.iter().map(|r| r.events).sum();
    let c = &spool.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert!(evicted_events > 0);
    assert_eq!(get(&c.evicted_events), evicted_events);
    assert!(
        get(&c.bytes) <= (8 << 10) + (2 << 10) * 2,
        "bound held: {}",
        get(&c.bytes)
    );

    // the consumer now reads everything left: shipped + evicted = written, no overlap
    r.rewind();
    let (got, _) = drain(&mut r);
    let shipped_events: u64 = got.iter().map(|b| u64::from(b.2)).sum();
    assert_eq!(shipped_events + evicted_events, 201 * 5);
    for kind in [EventKind::File, EventKind::Process] {
        let mut seqs: Vec<u64> = got.iter().filter(|b| b.0 == kind).map(|b| b.1).collect();
        for rep in reports.iter().filter(|r| r.lost_kind == kind.as_str()) {
            assert_eq!(rep.last_seq - rep.first_seq + 1, rep.batches);
            seqs.extend(rep.first_seq..=rep.last_seq);
        }
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "{kind:?}: shipped and lost cover every number once"
        );
    }
    // the batch the consumer held was never evicted
    assert_eq!(got[0].1, 1);
}

#[test]
fn without_a_consumer_a_full_spool_retires_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = SpoolWriter::open(options(dir.path(), 8 << 10, 2 << 10)).unwrap();
    let mut lost = 0;
    for _ in 0..100 {
        lost += w
            .append(
                EventKind::File,
                Encoding::Json,
                1,
                &payload(EventKind::File, w.next_seq(EventKind::File)),
            )
            .unwrap()
            .evicted
            .len();
    }
    let c = &w.spool().counters;
    assert_eq!(lost, 0);
    assert!(
        c.retired_segments
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(segment_files(dir.path()) <= 5);
}

#[test]
fn a_second_writer_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _w = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
    let err = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("in use by another collector"), "{err}");
}

#[test]
fn a_damaged_length_in_a_sealed_segment_is_counted_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = SpoolWriter::open(options(dir.path(), 1 << 30, 1 << 20)).unwrap();
    for _ in 0..5 {
        append(&mut w, EventKind::File, 7);
    }
    // a second writer run seals the first segment and writes more after it
    let spool_dir = dir.path().to_path_buf();
    drop(w);
    let (mut w, _) = SpoolWriter::open(options(&spool_dir, 1 << 30, 1 << 20)).unwrap();
    append(&mut w, EventKind::File, 7);
    // the second batch's length field claims far more than the segment holds
    let seg = dir.path().join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let needle = b"file-2-";
    let payload_at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let len_at = payload_at - 32 + 8;
    bytes[len_at..len_at + 4].copy_from_slice(&(1u32 << 20).to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();

    // a reader in another process (the detector's tail), before the
    // collector's own reader acknowledges and deletes the segment
    let mut tail = vigil_spool::SpoolTail::open(dir.path(), Default::default());
    let (mut seqs, mut damaged) = (Vec::new(), 0);
    loop {
        match tail.next_batch().unwrap() {
            vigil_spool::Tailed::Batch { record, .. } => seqs.push(record.header.seq),
            vigil_spool::Tailed::Corrupt { .. } => damaged += 1,
            vigil_spool::Tailed::Skipped { .. } => panic!("nothing was deleted"),
            vigil_spool::Tailed::Idle => break,
        }
    }
    assert_eq!((seqs, damaged), (vec![1, 3, 4, 5, 6], 1));
    let spool = w.spool();
    let mut r = SpoolReader::open(spool.clone(), "test").unwrap();
    let (got, corrupt) = drain(&mut r);
    // the collector's own reader: not taken for the end of the segment either
    assert_eq!(got.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 3, 4, 5, 6]);
    assert_eq!(corrupt, 1);
    assert_eq!(
        spool
            .counters
            .corrupt_records
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_roll_that_fails_for_lack_of_room_is_retried_once_there_is_room() {
    // a 64 KiB tmpfs (this test needs root, as the collector does)
    let mount = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs needs root");
    let _unmount = Unmount(mount.path().to_path_buf());
    let dir = mount.path().join("spool");
    let (mut w, _) = SpoolWriter::open(options(&dir, 1 << 30, 4096)).unwrap();
    // fill the file system with segments; appends (and rolls) fail
    let mut failed = 0;
    for _ in 0..400 {
        let seq = w.next_seq(EventKind::File);
        if w.append(
            EventKind::File,
            Encoding::Json,
            1,
            &payload(EventKind::File, seq),
        )
        .is_err()
        {
            failed += 1;
            if failed == 3 {
                break;
            }
        }
    }
    assert_eq!(failed, 3, "the 64 KiB file system never filled");
    // room again (the oldest segments go, as a reader would delete them)
    let segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    let mut sorted = segments.clone();
    sorted.sort();
    for old in &sorted[..sorted.len().saturating_sub(2)] {
        std::fs::remove_file(old).unwrap();
    }
    let seq = w.next_seq(EventKind::File);
    let appended = w.append(
        EventKind::File,
        Encoding::Json,
        1,
        &payload(EventKind::File, seq),
    );
    assert!(
        appended.is_ok(),
        "still failing once there is room: {appended:?}"
    );
}

/// Unmounts (lazily: files may still be open) when the test ends, passed or not.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
