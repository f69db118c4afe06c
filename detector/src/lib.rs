//! Vigil's detector: reads every host's events (the collector's spool on
//! this host, or Kafka), holds a bounded event-time window of them as
//! DataFusion tables, runs the detection rules of `rules/` over it every
//! few seconds, and stores the alerts (Parquet, and the `vigil.alerts`
//! topic).
//!
//! The data flows one way: [`source`] → [`decode`] and [`sequence`] →
//! [`retain`] → [`window`] → [`rules`] → [`alerts`] → [`outputs`]; [`detector`] runs the
//! loop and commits source positions only once the alerts are durable.

pub mod alerts;
pub mod bench;
pub mod columns;
pub mod config;
pub mod decode;
pub mod detector;
pub mod metrics;
pub mod outputs;
pub mod retain;
pub mod rules;
pub mod sequence;
pub mod source;
pub mod window;

use std::io::Write;
use std::path::Path;

/// Wall-clock time, ms since the epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Replace `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix: write a temporary file, sync, rename, sync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
