//! `vigil-collector bench-transport`: how fast batches travel from the
//! batcher to broker acknowledgement (scripts/bench-transport runs it for
//! both encodings and writes BENCHMARKS.md).
//!
//! Synthetic but realistic events (64 processes with full contexts; file,
//! network and process activity) go through the real batcher, spool writer
//! and shipper to the configured broker; the clock stops when the broker has
//! acknowledged the last one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;
use vigil_schema::{
    Endpoint, Event, EventKind, FileActivity, NetworkActivity, Process, ProcessContext, ProcessRef,
};

use crate::config::Config;
use crate::enrich::{Host, Output, SharedContext};
use crate::metrics::{self, Metrics};
use crate::transport::Transport;

#[derive(Debug, Serialize)]
pub struct Report {
    pub encoding: &'static str,
    pub events: u64,
    /// Time to hand every event to the batcher.
    pub feed_secs: f64,
    /// Time until the broker acknowledged the last event.
    pub total_secs: f64,
    pub events_per_sec: f64,
    pub messages: u64,
    /// Kafka message payload bytes (before the producer's lz4).
    pub payload_bytes: u64,
    pub bytes_per_event: f64,
}

fn contexts() -> Vec<Arc<SharedContext>> {
    (0..64u32)
        .map(|i| {
            let exe = [
                "/usr/bin/python3",
                "/usr/bin/bash",
                "/opt/cowork/bin/cowork-agent",
                "/usr/bin/git",
            ][i as usize % 4];
            Arc::new(SharedContext::new(ProcessContext {
                agent_id: (i % 2 == 0).then(|| "cowork".to_string()),
                agent_session: (i % 2 == 0)
                    .then(|| format!("5f1c0e7a-{i:04}-5d0e-9a51-3c8e2b7d9f10")),
                process: Process {
                    pid: 4000 + i,
                    tid: 4000 + i,
                    uid_exec: format!("8a3b6c1d-{i:04}-5e2f-8a9b-0c1d2e3f4a5b"),
                    comm: exe
                        .rsplit('/')
                        .next()
                        .unwrap_or("x")
                        .chars()
                        .take(15)
                        .collect(),
                    exe: exe.to_string(),
                    args: vec![
                        exe.to_string(),
                        "run".into(),
                        format!("/home/alice/work/task-{i}.py"),
                    ],
                    cmd_line: format!("{exe} run /home/alice/work/task-{i}.py"),
                    cwd: "/home/alice/work".into(),
                    user_id: 1000,
                    group_id: 1000,
                    user: "alice".into(),
                    start_time: 1_795_300_000_000 + i64::from(i),
                    cgroup_id: 8000 + u64::from(i % 4),
                    cgroup: "/user.slice/user-1000.slice/app-cowork.scope".into(),
                    source: "exec".into(),
                    truncated: false,
                },
                parent_process: Some(ProcessRef {
                    pid: 3000,
                    exe: "/opt/cowork/bin/cowork-agent".into(),
                    uid_exec: "1e2d3c4b-0000-5a69-8877-665544332211".into(),
                }),
                ancestors: vec![
                    ProcessRef {
                        pid: 1200,
                        exe: "/usr/lib/systemd/systemd".into(),
                        uid_exec: "aa".repeat(18),
                    },
                    ProcessRef {
                        pid: 1,
                        exe: "/sbin/init".into(),
                        uid_exec: "bb".repeat(18),
                    },
                ],
            }))
        })
        .collect()
}

/// `n` events: 60 % file, 25 % network, 15 % process, time increasing.
fn sample(n: usize) -> Vec<Output> {
    let ctx = contexts();
    (0..n)
        .map(|i| {
            let ts = 9_000_000_000_000 + i as u64 * 20_000;
            let time = 1_795_318_000_000 + (i / 50) as i64;
            let (kind, class, act, name) = match i % 20 {
                0..=11 => (EventKind::File, 1001, 14, "open"),
                12..=16 => (EventKind::Network, 4001, 1, "connect"),
                _ => (EventKind::Process, 1007, 1, "launch"),
            };
            let mut ev = Event::new(kind, class, act, name, time, ts, "bench-host", "bench");
            match kind {
                EventKind::File => {
                    ev.file = Some(FileActivity {
                        path: format!("/home/alice/work/project/src/module_{}.py", i % 5000),
                        fd: Some(3 + (i % 20) as i32),
                        flags: Some(0o100),
                        flags_names: Some("O_RDONLY|O_CLOEXEC".into()),
                        result: Some(3),
                        ..Default::default()
                    })
                }
                EventKind::Network => {
                    ev.network = Some(NetworkActivity {
                        protocol: "tcp".into(),
                        ip_version: "ipv4".into(),
                        direction: "outbound".into(),
                        src_endpoint: Endpoint {
                            ip: "10.0.0.7".into(),
                            port: 40000 + (i % 20000) as u16,
                        },
                        dst_endpoint: Endpoint {
                            ip: format!("104.18.{}.{}", i % 7, i % 200),
                            port: 443,
                        },
                        fd: 7,
                        flow_id: format!("{:016x}", i * 7919),
                        result: Some(0),
                        ..Default::default()
                    })
                }
                _ => ev.child_pid = None,
            }
            Output {
                event: ev,
                context: Some(ctx[i % ctx.len()].clone()),
            }
        })
        .collect()
}

pub fn run(config: &Config, events: u64) -> anyhow::Result<Report> {
    let kafka = config
        .kafka
        .as_ref()
        .context("bench-transport needs a [kafka] table")?;
    let encoding = match config.batch.encoding {
        crate::config::BatchEncoding::Arrow => "arrow",
        crate::config::BatchEncoding::Json => "json",
    };
    let metrics = Arc::new(Metrics::default());
    let host = Host {
        host_id: "bench-host".into(),
        hostname: "bench".into(),
    };
    let t = Transport::open(config, host, metrics.clone())?;
    let shipper = t.shipper.context("no shipper")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let drain = Duration::from_secs(kafka.shutdown_drain_secs);
    let network = std::thread::spawn(move || runtime.block_on(shipper.run(stop_rx, drain)));

    let sample = sample(100_000);
    let started = Instant::now();
    let mut batcher = t.batcher;
    for i in 0..events as usize {
        batcher.push(&sample[i % sample.len()])?;
        if i % 4096 == 0 {
            batcher.flush_due();
        }
    }
    batcher.flush_all();
    let feed_secs = started.elapsed().as_secs_f64();
    drop(batcher);
    t.spool_thread.join();
    let deadline = Instant::now() + Duration::from_secs(600);
    while metrics::get(&metrics.shipped_events) < events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not acknowledged within 600 s: {:?}",
            metrics.transport()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let total_secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = network.join();
    let payload_bytes = metrics::get(&metrics.shipped_bytes);
    Ok(Report {
        encoding,
        events,
        feed_secs,
        total_secs,
        events_per_sec: events as f64 / total_secs,
        messages: metrics::get(&metrics.shipped_messages),
        payload_bytes,
        bytes_per_event: payload_bytes as f64 / events as f64,
    })
}
