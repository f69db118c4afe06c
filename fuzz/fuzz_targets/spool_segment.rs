//! A spool segment file as a reader finds it on disk (written as the input,
//! in a temporary spool directory): every record, corrupt stretches skipped,
//! read by the segment reader (unsealed and sealed) and by the detector's tail.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vigil_spool::segment::{Next, SegmentReader};
use vigil_spool::{Position, SpoolTail, Tailed};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("vigil-fuzz-spool-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let path = vigil_spool::segment::path_of(dir(), 1);
    std::fs::write(&path, data).unwrap();
    // as the segment being written, and as a sealed one (where a record
    // running past the end is corruption, read past)
    for sealed in [false, true] {
        let mut reader = SegmentReader::open(&path, 0, data.len() as u64).unwrap();
        reader.set_sealed(sealed);
        let mut last = None;
        loop {
            match reader.next_record() {
                Ok(Next::Record(r)) => {
                    assert!(r.end > r.offset && Some(r.offset) >= last, "no progress");
                    last = Some(r.end);
                    let _ = (r.header.kind(), r.header.encoding());
                }
                Ok(Next::Corrupt { offset, resume, .. }) => {
                    assert!(resume > offset, "resync must move on");
                    last = Some(resume);
                }
                Ok(Next::End) | Err(_) => break,
            }
        }
    }
    let mut tail = SpoolTail::open(dir(), Position::default());
    for _ in 0..=data.len() {
        match tail.next_batch() {
            Ok(Tailed::Idle) | Err(_) => break,
            Ok(_) => {}
        }
    }
});
