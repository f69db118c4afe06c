//! Tailing a spool from outside the writer (the local detector's source):
//! in order, across segments, resumable, honest about what went missing.

use std::io::Write;
use std::path::Path;

use vigil_schema::EventKind;
use vigil_spool::{Encoding, Fsync, Position, SpoolTail, SpoolWriter, Tailed, WriterOptions};

fn writer(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolWriter {
    SpoolWriter::open(WriterOptions {
        dir: dir.to_path_buf(),
        host_id: "host-t".into(),
        max_bytes,
        segment_bytes,
        fsync: Fsync::Never,
        group: None,
    })
    .unwrap()
    .0
}

fn append(w: &mut SpoolWriter, n: usize) {
    for _ in 0..n {
        let seq = w.next_seq(EventKind::File);
        let payload = format!("file-{seq}-{}", "x".repeat(1000));
        w.append(EventKind::File, Encoding::Json, 1, payload.as_bytes())
            .unwrap();
    }
}

/// Batches' seqs until Idle; Skipped and Corrupt counted.
fn drain(t: &mut SpoolTail) -> (Vec<u64>, usize, usize) {
    let (mut seqs, mut skipped, mut corrupt) = (Vec::new(), 0, 0);
    loop {
        match t.next_batch().unwrap() {
            Tailed::Batch { record, end } => {
                let text = String::from_utf8(record.payload).unwrap();
                assert!(text.starts_with(&format!("file-{}-", record.header.seq)));
                assert_eq!(end, t.position());
                seqs.push(record.header.seq);
            }
            Tailed::Skipped { .. } => skipped += 1,
            Tailed::Corrupt { .. } => corrupt += 1,
            Tailed::Idle => return (seqs, skipped, corrupt),
        }
    }
}

#[test]
fn follows_the_writer_across_segments_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 1 << 30, 64 << 10);
    let mut t = SpoolTail::open(dir.path(), Position::default());
    assert!(matches!(t.next_batch().unwrap(), Tailed::Idle));
    append(&mut w, 100); // about two segments
    let (seqs, skipped, corrupt) = drain(&mut t);
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!((skipped, corrupt), (0, 0));
    // more while the tail waits
    append(&mut w, 150);
    let saved = {
        let mut got = Vec::new();
        while got.len() < 50 {
            if let Tailed::Batch { record, .. } = t.next_batch().unwrap() {
                got.push(record.header.seq);
            }
        }
        assert_eq!(got, (101..=150).collect::<Vec<_>>());
        t.position()
    };
    // a restarted reader goes on from the saved position: no repeats, no gaps
    let mut resumed = SpoolTail::open(dir.path(), saved);
    let (seqs, skipped, _) = drain(&mut resumed);
    assert_eq!(seqs, (151..=250).collect::<Vec<_>>());
    assert_eq!(skipped, 0);
}

#[test]
fn a_record_being_written_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 1 << 30, 1 << 20);
    append(&mut w, 3);
    let mut t = SpoolTail::open(dir.path(), Position::default());
    assert_eq!(drain(&mut t).0, vec![1, 2, 3]);
    // the start of a record whose payload is not there yet
    let newest = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    let header = vigil_spool::RecordHeader::batch(EventKind::File, Encoding::Json, 4, 1);
    let full = header.encode(&[b'y'; 500]);
    f.write_all(&full[..100]).unwrap();
    let (seqs, skipped, corrupt) = drain(&mut t);
    assert_eq!(
        (seqs.len(), skipped, corrupt),
        (0, 0, 0),
        "nothing half-read"
    );
    // the rest arrives: now it is read
    f.write_all(&full[100..]).unwrap();
    match t.next_batch().unwrap() {
        Tailed::Batch { record, .. } => assert_eq!(record.header.seq, 4),
        other => panic!("expected the completed record, got {other:?}"),
    }
}

#[test]
fn segments_evicted_before_they_were_read_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB segments, at most 256 KiB: nobody pins anything for this reader
    let mut w = writer(dir.path(), 256 << 10, 64 << 10);
    append(&mut w, 10);
    let mut t = SpoolTail::open(dir.path(), Position::default());
    assert_eq!(drain(&mut t).0.len(), 10);
    // far more than the bound: the segment the tail is in goes away
    append(&mut w, 600);
    let (seqs, skipped, _) = drain(&mut t);
    assert_eq!(skipped, 1, "one jump over the evicted segments");
    assert_eq!(*seqs.last().unwrap(), 610);
    // the seqs say exactly what was lost: a gap after 10, then contiguous
    assert!(seqs[0] > 11, "first after the jump: {}", seqs[0]);
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1));
}
