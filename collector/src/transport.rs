//! The batch transport assembled: batcher → spool writer thread → (with
//! `[kafka]`) shipper. Used by the collector and by its transport benchmark.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tracing::info;

use crate::config::{Config, FsyncPolicy};
use crate::enrich::Host;
use crate::metrics::Metrics;
use crate::ship::kafka::Shipper;
use crate::sink::batch::Batcher;
use crate::sink::spool::SpoolThread;

pub struct Transport {
    pub batcher: Batcher,
    pub spool_thread: SpoolThread,
    /// Present with `[kafka]`; to be run on the network thread.
    pub shipper: Option<Shipper>,
}

impl Transport {
    /// Open (and recover) the spool, start its writer, make the shipper.
    pub fn open(config: &Config, host: Host, metrics: Arc<Metrics>) -> anyhow::Result<Transport> {
        let dir = config.spool_dir();
        // events of every user: a data directory others can write to is
        // refused; the spool's readers (its group) may enter it
        let group = spool_group(&config.spool.group);
        vigil_spool::files::prepare_dir(&config.data_dir, group)
            .context("the data directory is not safe to keep events in")?;
        let (writer, recovery) = vigil_spool::SpoolWriter::open(vigil_spool::WriterOptions {
            dir: dir.clone(),
            host_id: host.host_id.clone(),
            max_bytes: config.spool.max_bytes,
            segment_bytes: config.spool.segment_bytes,
            fsync: match config.spool.fsync {
                FsyncPolicy::Always => vigil_spool::Fsync::Always,
                FsyncPolicy::Interval => vigil_spool::Fsync::Interval(Duration::from_millis(
                    config.spool.fsync_interval_ms,
                )),
                FsyncPolicy::Never => vigil_spool::Fsync::Never,
            },
            group,
        })
        .with_context(|| format!("cannot open the spool {}", dir.display()))?;
        info!(spool = %dir.display(), segments = recovery.segments, batches = recovery.batches,
            events = recovery.events, corrupt = recovery.corrupt_records, torn_bytes = recovery.torn_bytes,
            "spool opened");
        let spool = writer.spool();
        let _ = metrics.spool.set(spool.clone());
        let wake = Arc::new(Notify::new());
        let shipper = match &config.kafka {
            Some(kafka) => {
                let reader = vigil_spool::SpoolReader::open(spool, "kafka")
                    .context("cannot open the shipper's spool position")?;
                Some(
                    Shipper::new(
                        kafka.clone(),
                        host.host_id.clone(),
                        reader,
                        config.spool.max_bytes,
                        wake.clone(),
                        metrics.clone(),
                    )
                    .context("cannot create the Kafka producer")?,
                )
            }
            None => None,
        };
        let (handle, spool_thread) = SpoolThread::start(
            writer,
            host,
            &config.batch,
            shipper.is_some().then_some(wake),
            metrics,
        )
        .context("cannot start the spool writer")?;
        Ok(Transport {
            batcher: Batcher::new(&config.batch, handle),
            spool_thread,
            shipper,
        })
    }
}

/// The gid of the spool's reader group, if it exists.
fn spool_group(name: &str) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            info!(group = name, "no such group: the spool is readable by the collector's user only (the packages create the group)");
            None
        }
    }
}
