//! `vigil-detector bench throughput|latency`: the detector's speed through
//! the full rule pack (scripts/bench-detector runs both and writes
//! BENCHMARKS.md).
//!
//! Events are synthetic but shaped like a workstation's: 10 hosts, each with
//! 64 processes with full contexts, of which 8 belong to a desktop agent;
//! per 100 events 55 file, 25 network, 15 process, and some quantum jobs
//! and heartbeats. They are encoded as the collector encodes them (Arrow
//! IPC with zstd buffers, the collector's default; one batch per host and
//! kind) and written into a spool; the real
//! spool source, decoder, window, rules and Parquet store read them.
//!
//! - throughput: N events written first, then timed through the detector;
//!   events per CPU-second (all threads: one core's worth of work).
//! - latency: a writer thread appends at a fixed rate with event time =
//!   wall time, and every 500 ms one agent reads a new credential file; the
//!   latency is from that event's time to its alert being stored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use vigil_schema::arrow::EventBatchBuilder;
use vigil_schema::ipc::{self, Compression};
use vigil_schema::{
    Endpoint, Event, EventKind, FileActivity, NetworkActivity, Process, ProcessContext, ProcessRef,
    QuantumJob,
};
use vigil_spool::{Encoding, Fsync, SpoolWriter, WriterOptions};

use crate::config::DetectorConfig;
use crate::detector::Detector;
use crate::metrics::{get, Metrics};
use crate::rules::check::check_dir;
use crate::rules::engine::Engine;
use crate::source::spool::SpoolSource;

const HOSTS: usize = 10;
const PROCESSES: usize = 64;
const AGENT_PROCESSES: usize = 8;

/// Generates one host's events, batch by batch.
struct HostGen {
    host: String,
    contexts: Vec<Arc<ProcessContext>>,
    seq: [u64; 5],
    n: u64,
}

impl HostGen {
    fn new(h: usize) -> HostGen {
        let host = format!("bench-host-{h:02}");
        let contexts = (0..PROCESSES)
            .map(|p| {
                let agent = p < AGENT_PROCESSES;
                let exe = [
                    "/usr/bin/python3",
                    "/usr/bin/node",
                    "/usr/bin/cargo",
                    "/usr/lib/firefox/firefox",
                ][p % 4];
                Arc::new(ProcessContext {
                    agent_id: agent.then(|| "cowork".to_string()),
                    agent_session: agent.then(|| format!("{host}-session")),
                    process: Process {
                        pid: 1000 + p as u32,
                        tid: 1000 + p as u32,
                        uid_exec: format!("{host}-exec-{p}"),
                        comm: exe.rsplit('/').next().unwrap().into(),
                        exe: exe.into(),
                        args: vec![exe.into(), "--flag".into(), format!("/home/ana/work/{p}")],
                        cmd_line: format!("{exe} --flag /home/ana/work/{p}"),
                        cwd: "/home/ana/work".into(),
                        user_id: 1000,
                        group_id: 1000,
                        user: "ana".into(),
                        start_time: 1,
                        cgroup_id: 7,
                        cgroup: "/user.slice/user-1000.slice".into(),
                        source: "exec".into(),
                        truncated: false,
                    },
                    parent_process: Some(ProcessRef {
                        pid: 900,
                        exe: "/usr/bin/bash".into(),
                        uid_exec: format!("{host}-parent"),
                    }),
                    ancestors: vec![ProcessRef {
                        pid: 1,
                        exe: "/usr/lib/systemd/systemd".into(),
                        uid_exec: format!("{host}-init"),
                    }],
                })
            })
            .collect();
        HostGen {
            host,
            contexts,
            seq: [0; 5],
            n: 0,
        }
    }

    /// `rows` events at times spread over [t0, t1), as one IPC payload per
    /// kind: (kind, events, payload, seq).
    fn batches(
        &mut self,
        rows: usize,
        t0: i64,
        t1: i64,
        credential_read: bool,
    ) -> Vec<(EventKind, u32, Vec<u8>)> {
        let mut builders: Vec<EventBatchBuilder> = EventKind::ALL
            .iter()
            .map(|k| EventBatchBuilder::new(*k))
            .collect();
        for i in 0..rows {
            self.n += 1;
            let n = self.n;
            let t = t0 + (t1 - t0) * i as i64 / rows.max(1) as i64;
            let ctx = &self.contexts[(n as usize * 7) % PROCESSES];
            let r = n % 100;
            let (kind, activity) = match r {
                0..55 => (
                    EventKind::File,
                    if r.is_multiple_of(2) { "open" } else { "close" },
                ),
                55..80 => (
                    EventKind::Network,
                    ["connect", "traffic", "close"][r as usize % 3],
                ),
                80..95 => (EventKind::Process, "launch"),
                95 if n % 1000 == 95 => (EventKind::QuantumJob, "submit"),
                _ => (EventKind::File, "open"),
            };
            let mut e = Event::new(
                kind,
                0,
                1,
                activity,
                t,
                t as u64 * 1_000_000,
                &self.host,
                &self.host,
            );
            match kind {
                EventKind::File => {
                    e.file = Some(FileActivity {
                        path: format!("/home/ana/work/data/{}.csv", n % 5000),
                        fd: Some(5),
                        flags_names: Some(
                            if r.is_multiple_of(4) {
                                "O_WRONLY|O_CREAT"
                            } else {
                                "O_RDONLY"
                            }
                            .into(),
                        ),
                        bytes_read: (activity == "close").then_some(4096),
                        ..Default::default()
                    })
                }
                EventKind::Network => {
                    e.network = Some(NetworkActivity {
                        protocol: "tcp".into(),
                        ip_version: "ipv4".into(),
                        direction: "outbound".into(),
                        src_endpoint: Endpoint {
                            ip: "10.0.0.5".into(),
                            port: 40000 + (n % 1000) as u16,
                        },
                        dst_endpoint: Endpoint {
                            ip: format!("203.0.113.{}", n % 20),
                            port: 443,
                        },
                        fd: 7,
                        flow_id: format!("f{}", n % 10_000),
                        bytes_out: (activity != "connect").then_some(1500),
                        bytes_in: (activity != "connect").then_some(9000),
                        ..Default::default()
                    })
                }
                EventKind::QuantumJob => {
                    e.quantum_job = Some(Box::new(QuantumJob {
                        provider: "ibm_runtime".into(),
                        operation: "submit".into(),
                        decision: "allowed".into(),
                        backend: Some("ibm_fez".into()),
                        device_type: Some("qpu".into()),
                        qubits: Some(5),
                        bindings: Some(8),
                        shots: Some(1000),
                        executions: Some(8000),
                        payload_bytes: 4000,
                        ..Default::default()
                    }))
                }
                _ => {}
            }
            builders[usize::from(kind.code()) - 1].append(&e, Some(ctx));
        }
        if credential_read {
            let mut e = Event::new(
                EventKind::File,
                1001,
                14,
                "open",
                t1 - 1,
                0,
                &self.host,
                &self.host,
            );
            e.file = Some(FileActivity {
                path: format!("/home/ana/.aws/credentials-{}", self.n),
                flags_names: Some("O_RDONLY".into()),
                ..Default::default()
            });
            builders[usize::from(EventKind::File.code()) - 1].append(&e, Some(&self.contexts[0]));
        }
        if self.n % 300_000 < rows as u64 || credential_read {
            // a heartbeat about every 30 s of a host's events at 10k/s
            let mut e = Event::new(
                EventKind::Collector,
                0,
                1,
                "heartbeat",
                t1 - 1,
                0,
                &self.host,
                &self.host,
            );
            e.collector = Some(Default::default());
            builders[usize::from(EventKind::Collector.code()) - 1].append(&e, None);
        }
        let mut out = Vec::new();
        for (i, b) in builders.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            let kind = EventKind::ALL[i];
            let events = b.len() as u32;
            self.seq[i] += 1;
            let payload = ipc::encode(&b.finish(), &self.host, self.seq[i], Compression::Zstd)
                .expect("encode");
            out.push((kind, events, payload));
        }
        out
    }
}

fn spool_writer(dir: &std::path::Path) -> SpoolWriter {
    SpoolWriter::open(WriterOptions {
        dir: dir.to_path_buf(),
        host_id: "bench".into(),
        max_bytes: 64 << 30,
        segment_bytes: 64 << 20,
        fsync: Fsync::Never,
        group: None,
    })
    .expect("open bench spool")
    .0
}

/// CPU seconds of this process (all threads).
fn cpu_secs() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn detector(
    config: &DetectorConfig,
    keep_all: bool,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Detector> {
    let engine = Engine::new();
    let checked = check_dir(&engine, &config.rules)?;
    anyhow::ensure!(checked.errors.is_empty(), "rules: {:?}", checked.errors);
    let mut rules = checked.rules;
    if keep_all {
        for r in &mut rules {
            r.keep.clear();
        }
    }
    let source = SpoolSource::open(
        config.source.spool.as_ref().expect("spool source"),
        &config.data_dir,
    )?;
    Ok(Detector::new(
        config,
        rules,
        Box::new(source),
        None,
        metrics,
    )?)
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub events: u64,
    pub keep_all: bool,
    pub rules: usize,
    pub wall_secs: f64,
    pub cpu_secs: f64,
    pub events_per_cpu_sec: f64,
    pub events_per_sec: f64,
    pub window_rows: u64,
    pub window_bytes: u64,
    pub unneeded_events: u64,
    pub alerts: u64,
    pub evaluations: u64,
    /// CPU spent evaluating rules (of cpu_secs).
    pub evaluation_secs: f64,
    pub peak_rss_mib: f64,
}

/// Write `events` events (at 100k events/s of event time) into a spool, then
/// time the detector through them.
pub fn throughput(
    config: &DetectorConfig,
    events: u64,
    keep_all: bool,
) -> anyhow::Result<Throughput> {
    let spool = config.source.spool.clone().expect("spool source");
    {
        let mut w = spool_writer(&spool);
        let mut hosts: Vec<HostGen> = (0..HOSTS).map(HostGen::new).collect();
        // 10k events per host per second of event time: 100k/s in all
        let rows = 2_500;
        let mut t = crate::wall_ms() - (events as i64 / 100);
        let mut written = 0;
        while written < events {
            for h in &mut hosts {
                for (kind, n, payload) in h.batches(rows, t, t + 250, false) {
                    w.append(kind, Encoding::Arrow, n, &payload)?;
                    written += u64::from(n);
                }
            }
            t += 250;
        }
        w.sync()?;
    }
    let metrics = Arc::new(Metrics::default());
    let mut d = detector(config, keep_all, metrics.clone())?;
    let total = vigil_spool_records(&spool)?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, metrics) = (stop.clone(), metrics.clone());
        std::thread::spawn(move || {
            while get(&metrics.messages) < total {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let (cpu0, wall0) = (cpu_secs(), Instant::now());
    d.run(&stop)?;
    let (cpu, wall) = (cpu_secs() - cpu0, wall0.elapsed().as_secs_f64());
    watcher.join().expect("watcher");
    let events = get(&metrics.events) + get(&metrics.unneeded_events);
    Ok(Throughput {
        events,
        keep_all,
        rules: d.rule_count(),
        wall_secs: wall,
        cpu_secs: cpu,
        events_per_cpu_sec: events as f64 / cpu,
        events_per_sec: events as f64 / wall,
        window_rows: d.window().rows() as u64,
        window_bytes: d.window().bytes() as u64,
        unneeded_events: get(&metrics.unneeded_events),
        alerts: get(&metrics.alerts_written),
        evaluations: get(&metrics.evaluations),
        evaluation_secs: get(&metrics.evaluation_ns) as f64 / 1e9,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Batch records in a spool directory (what the detector will read).
fn vigil_spool_records(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut tail = vigil_spool::SpoolTail::open(dir, Default::default());
    let mut n = 0;
    loop {
        match tail.next_batch()? {
            vigil_spool::Tailed::Batch { .. } => n += 1,
            vigil_spool::Tailed::Idle => return Ok(n),
            _ => {}
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub rate: u64,
    pub secs: u64,
    pub events: u64,
    pub alerts: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub window_rows: u64,
    pub window_bytes: u64,
    pub unneeded_events: u64,
    pub peak_rss_mib: f64,
    pub cpu_secs: f64,
}

/// Append at `rate` events/s for `secs` seconds while the detector runs;
/// event-time-to-stored-alert latency of the credential reads.
pub fn latency(config: &DetectorConfig, rate: u64, secs: u64) -> anyhow::Result<Latency> {
    let spool = config.source.spool.clone().expect("spool source");
    let mut w = spool_writer(&spool);
    let metrics = Arc::new(Metrics::default());
    let mut d = detector(config, false, metrics.clone())?;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    {
        let latencies = latencies.clone();
        d.on_alert(move |a| {
            if a.rule_id == "cred.store_read" && a.count == 1 {
                latencies
                    .lock()
                    .unwrap()
                    .push((crate::wall_ms() - a.time) as f64);
            }
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut hosts: Vec<HostGen> = (0..HOSTS).map(HostGen::new).collect();
            let tick = Duration::from_millis(100);
            let per_tick = (rate / 10) as usize / HOSTS;
            let start = Instant::now();
            let mut ticks = 0u64;
            while start.elapsed() < Duration::from_secs(secs) {
                let now = crate::wall_ms();
                for (i, h) in hosts.iter_mut().enumerate() {
                    // every 500 ms one host's agent reads a new credential file
                    let cred = ticks.is_multiple_of(5) && i == (ticks / 5) as usize % HOSTS;
                    for (kind, n, payload) in h.batches(per_tick, now - 100, now, cred) {
                        w.append(kind, Encoding::Arrow, n, &payload)?;
                        written.fetch_add(u64::from(n), Ordering::Relaxed);
                    }
                }
                w.sync()?;
                ticks += 1;
                if let Some(left) = (tick * ticks as u32).checked_sub(start.elapsed()) {
                    std::thread::sleep(left);
                }
            }
            // let the detector drain, then stop it
            std::thread::sleep(Duration::from_secs(3));
            stop.store(true, Ordering::Relaxed);
            Ok(())
        })
    };
    let cpu0 = cpu_secs();
    d.run(&stop)?;
    let cpu = cpu_secs() - cpu0;
    writer.join().expect("writer")?;
    let mut l = latencies.lock().unwrap().clone();
    anyhow::ensure!(!l.is_empty(), "no alert was raised");
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1];
    Ok(Latency {
        rate,
        secs,
        events: written.load(Ordering::Relaxed),
        alerts: l.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: *l.last().unwrap(),
        window_rows: d.window().rows() as u64,
        window_bytes: d.window().bytes() as u64,
        unneeded_events: get(&metrics.unneeded_events),
        peak_rss_mib: peak_rss_mib(),
        cpu_secs: cpu,
    })
}
