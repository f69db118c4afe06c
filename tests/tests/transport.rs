//! The batch transport end to end: the real collector, the real kernel, the
//! real broker (Tansu). Every event the collector printed must come out of
//! Kafka, field for field, numbered without gaps — through outages, a
//! SIGKILL, a full spool and a corrupted record.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use vigil_e2e::kafka::{self, free_port, Batch, Broker};
use vigil_e2e::{marker, Collector, StartOptions, Value};
use vigil_schema::{Event, EventKind, LossReport};

const HOST: &str = "e2e-transport-host";

fn config(brokers: &str, extra: &str) -> String {
    format!("host_id = \"{HOST}\"\n{extra}\n[kafka]\nbrokers = \"{brokers}\"\npartitions = 2\n")
}

/// A collector shipping to `brokers` with `extra` config and a metrics
/// endpoint on a free port; returns it with that endpoint's address.
fn start_with_metrics(brokers: &str, extra: &str, options: StartOptions) -> (Collector, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let extra = format!("[metrics]\nlisten = \"{metrics}\"\n{extra}");
    (
        Collector::start_with(&config(brokers, &extra), options),
        metrics,
    )
}

/// Files written and read, processes started, one TCP connection: every kind.
fn workload(dir: &Path, rounds: usize) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "for i in $(seq {rounds}); do echo data$i > {d}/f$i; cat {d}/f$i > /dev/null; done; \
         exec 3<>/dev/tcp/127.0.0.1/{port}; echo hello >&3; exec 3>&-",
        d = dir.display()
    );
    let status = Command::new("bash").arg("-c").arg(script).status().unwrap();
    assert!(status.success());
    drop(listener.accept());
}

/// A workload that runs until killed.
fn endless_workload(dir: &Path) -> Child {
    let script = format!(
        "while :; do for i in 1 2 3 4 5; do echo x > {d}/loop$i; done; sleep 0.05; done",
        d = dir.display()
    );
    Command::new("bash").arg("-c").arg(script).spawn().unwrap()
}

/// The events the collector printed, by kind, in order.
fn printed_by_kind(printed: &[Value]) -> BTreeMap<EventKind, Vec<Event>> {
    let mut out: BTreeMap<EventKind, Vec<Event>> = BTreeMap::new();
    for v in printed {
        let ev: Event = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("printed event does not parse ({e}): {v}"));
        out.entry(ev.kind).or_default().push(ev);
    }
    out
}

fn shipped_events(batches: &[Batch]) -> Vec<Event> {
    batches.iter().flat_map(|b| b.events.clone()).collect()
}

/// Every kind's shipped events equal the printed ones, in order.
fn assert_same_events(
    printed: &BTreeMap<EventKind, Vec<Event>>,
    shipped: &BTreeMap<EventKind, Vec<Batch>>,
) {
    for (kind, want) in printed {
        let got = shipped
            .get(kind)
            .map(|b| shipped_events(b))
            .unwrap_or_default();
        if let Some(i) = (0..want.len().max(got.len())).find(|i| want.get(*i) != got.get(*i)) {
            panic!(
                "{kind:?}: event {i} of {} printed / {} shipped differs:\n printed: {:?}\n shipped: {:?}",
                want.len(),
                got.len(),
                want.get(i),
                got.get(i)
            );
        }
    }
}

fn assert_no_gap(kind: EventKind, seqs: &[u64]) {
    let n = seqs.len() as u64;
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "{kind:?}: sequence numbers 1..={n} without a gap"
    );
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// Wait until everything spooled is shipped (or evicted).
fn wait_shipped(metrics: &str, timeout: Duration) {
    kafka::wait_metric(metrics, "spool drained to Kafka", timeout, |m| {
        let spooled = metric(m, "vigil_spool_events_total");
        spooled > 0.0
            && spooled
                == metric(m, "vigil_shipped_events_total")
                    + metric(m, "vigil_spool_evicted_events_total")
            && metric(m, "vigil_producer_queue") == 0.0
    });
}

fn round_trip(encoding: &str) {
    let broker = Broker::start(free_port());
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start_with(
        &config(
            &broker.brokers(),
            &format!("[batch]\nencoding = \"{encoding}\"\nflush_interval_ms = 100\n"),
        ),
        StartOptions {
            output: "stdout,spool",
            ..Default::default()
        },
    );
    let m = marker("rt");
    workload(dir.path(), 50);
    let path = format!("{}/f7", dir.path().display());
    c.wait_for("the workload's file events", Duration::from_secs(20), |e| {
        e["file"]["path"] == path.as_str()
    });
    let stderr_marker = m; // keeps the marker in failure output
    let printed = c.stop();
    let messages = kafka::read_all(&broker.brokers(), Duration::from_secs(60));
    assert!(!messages.is_empty(), "nothing shipped ({stderr_marker})");
    for msg in &messages {
        assert_eq!(msg.key, HOST.as_bytes(), "message key is the host id");
        assert_eq!(msg.header("vigil.host_id"), HOST);
        assert_eq!(msg.header("vigil.schema_version"), "1");
        assert_eq!(msg.header("vigil.encoding"), encoding);
        assert_eq!(
            msg.topic,
            format!("vigil.events.{}", msg.header("vigil.kind"))
        );
    }
    let batches: Vec<Batch> = messages.iter().map(kafka::decode).collect();
    assert!(batches.iter().all(|b| b.host_id == HOST));
    let shipped = kafka::dedup(batches);
    for (kind, b) in &shipped {
        assert_no_gap(*kind, &kafka::seqs(b));
    }
    let printed = printed_by_kind(&printed);
    for kind in [
        EventKind::Process,
        EventKind::File,
        EventKind::Network,
        EventKind::Collector,
    ] {
        assert!(
            printed.contains_key(&kind),
            "the workload printed {kind:?} events"
        );
    }
    assert_same_events(&printed, &shipped);
}

#[test]
fn arrow_batches_reach_kafka_field_for_field() {
    round_trip("arrow");
}

#[test]
fn json_messages_reach_kafka_field_for_field() {
    round_trip("json");
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn a_broker_down_for_30_s_loses_nothing() {
    let mut broker = Broker::start(free_port());
    let (c, metrics) = start_with_metrics(
        &broker.brokers(),
        "[batch]\nflush_interval_ms = 100\n",
        StartOptions {
            output: "stdout,spool",
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut load = endless_workload(dir.path());
    std::thread::sleep(Duration::from_secs(4));
    // The broker keeps messages in memory only: read what it has before
    // stopping it. The collector is frozen meanwhile so that nothing it
    // counts as delivered is missing from this snapshot.
    signal(c.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(1));
    let before = kafka::read_all(&broker.brokers(), Duration::from_secs(30));
    broker.stop();
    signal(c.pid(), libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(30));
    // memory storage: the restarted broker has no topics; the collector makes them again
    broker.restart();
    std::thread::sleep(Duration::from_secs(3));
    let _ = load.kill();
    let _ = load.wait();
    wait_shipped(&metrics, Duration::from_secs(120));
    let failures = metric(&kafka::scrape(&metrics), "vigil_delivery_failures_total");
    let printed = c.stop();

    let after = kafka::read_all(&broker.brokers(), Duration::from_secs(60));
    assert!(!before.is_empty() && !after.is_empty());
    let shipped = kafka::dedup(before.iter().chain(&after).map(kafka::decode).collect());
    for (kind, b) in &shipped {
        assert_no_gap(*kind, &kafka::seqs(b));
    }
    let printed = printed_by_kind(&printed);
    let total: usize = printed.values().map(Vec::len).sum();
    assert!(
        total > 500,
        "the workload ran through the outage ({total} events)"
    );
    assert_same_events(&printed, &shipped);
    assert!(
        failures >= 1.0,
        "the outage was noticed: {failures} delivery failures"
    );
}

#[test]
fn a_collector_killed_mid_stream_resumes_without_a_gap() {
    let broker = Broker::start(free_port());
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&broker.brokers(), "[batch]\nflush_interval_ms = 50\n");
    let options = StartOptions {
        output: "spool",
        data_dir: Some(data.path().to_path_buf()),
    };
    let first = Collector::start_with(&cfg, options.clone());
    let mut load = endless_workload(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    first.kill();
    std::thread::sleep(Duration::from_secs(1));
    let second = Collector::start_with(&cfg, options);
    std::thread::sleep(Duration::from_secs(3));
    let _ = load.kill();
    let _ = load.wait();
    std::thread::sleep(Duration::from_secs(1));
    second.stop();

    let messages = kafka::read_all(&broker.brokers(), Duration::from_secs(60));
    let shipped = kafka::dedup(messages.iter().map(kafka::decode).collect());
    for kind in [EventKind::File, EventKind::Process, EventKind::Collector] {
        let b = shipped
            .get(&kind)
            .unwrap_or_else(|| panic!("{kind:?} shipped"));
        assert_no_gap(kind, &kafka::seqs(b));
    }
    // both runs are in one numbered stream: the heartbeat uptime starts over
    let uptimes: Vec<u64> = shipped_events(&shipped[&EventKind::Collector])
        .iter()
        .filter_map(|e| e.collector.as_ref().map(|c| c.uptime_secs))
        .collect();
    assert!(
        uptimes.windows(2).any(|w| w[1] < w[0]),
        "heartbeats of both runs in one sequence: {uptimes:?}"
    );
}

#[test]
fn a_full_spool_evicts_counts_exactly_and_reports_after_reconnect() {
    let port = free_port(); // no broker yet
    let (c, metrics) = start_with_metrics(
        &format!("127.0.0.1:{port}"),
        "[batch]\nflush_interval_ms = 50\ncompression = \"none\"\n\
         [spool]\nmax_bytes = 262144\nsegment_bytes = 65536\n",
        StartOptions {
            output: "stdout,spool",
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut load = endless_workload(dir.path());
    kafka::wait_metric(&metrics, "evictions", Duration::from_secs(120), |m| {
        metric(m, "vigil_spool_evicted_events_total") > 0.0
    });
    let _ = load.kill();
    let _ = load.wait();
    let broker = Broker::start(port);
    wait_shipped(&metrics, Duration::from_secs(120));
    let evicted = metric(&kafka::scrape(&metrics), "vigil_spool_evicted_events_total") as u64;
    let printed = c.stop();
    let printed_kinds = printed_by_kind(&printed);

    let messages = kafka::read_all(&broker.brokers(), Duration::from_secs(60));
    let shipped = kafka::dedup(messages.iter().map(kafka::decode).collect());
    let losses: Vec<LossReport> = shipped
        .get(&EventKind::Collector)
        .map(|b| shipped_events(b))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.loss)
        .collect();
    let lost: u64 = losses.iter().map(|l| l.events).sum();
    assert!(lost > 0, "loss events were shipped after reconnect");
    // (the final batches may evict more while the collector stops)
    assert!(
        lost >= evicted,
        "loss events report every evicted event: {lost} < {evicted}"
    );
    // per kind: shipped and lost sequence numbers cover 1..=max exactly once
    for (kind, batches) in &shipped {
        let mut all = kafka::seqs(batches);
        for l in losses.iter().filter(|l| l.lost_kind == kind.as_str()) {
            assert_eq!(l.last_seq - l.first_seq + 1, l.batches);
            all.extend(l.first_seq..=l.last_seq);
        }
        all.sort_unstable();
        assert_no_gap(*kind, &all);
    }
    // loss events are written by the spool itself, not printed
    let shipped_total: usize = shipped
        .values()
        .map(|b| {
            shipped_events(b)
                .iter()
                .filter(|e| e.loss.is_none())
                .count()
        })
        .sum();
    let counts: Vec<String> = printed_kinds
        .iter()
        .map(|(k, v)| {
            let got = shipped.get(k).map(|b| shipped_events(b).len()).unwrap_or(0);
            let lost: u64 = losses
                .iter()
                .filter(|l| l.lost_kind == k.as_str())
                .map(|l| l.events)
                .sum();
            format!("{k:?}: printed {} shipped {got} lost {lost}", v.len())
        })
        .collect();
    assert_eq!(
        shipped_total as u64 + lost,
        printed.len() as u64,
        "every printed event was shipped or counted as evicted: {counts:#?}\nlast heartbeat: {:?}",
        printed_kinds
            .get(&EventKind::Collector)
            .and_then(|v| v.iter().rev().find(|e| e.collector.is_some()))
    );
}

#[test]
fn a_corrupt_spool_record_is_skipped_counted_and_the_rest_shipped() {
    use vigil_spool::segment::{Next, SegmentReader};
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // first run: spool only
    let spool_only = Collector::start_with(
        &format!("host_id = \"{HOST}\"\n[batch]\nflush_interval_ms = 50\n"),
        StartOptions {
            output: "spool",
            data_dir: Some(data.path().to_path_buf()),
        },
    );
    workload(dir.path(), 30);
    std::thread::sleep(Duration::from_secs(2));
    workload(dir.path(), 30);
    spool_only.stop();

    // every batch record on disk, then flip a byte in the middle of the second one
    let seg = data.path().join("spool/00000000000000000001.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut reader = SegmentReader::open(&seg, 0, len).unwrap();
    let mut records = Vec::new();
    while let Next::Record(r) = reader.next_record().unwrap() {
        if r.header.is_batch() {
            records.push(r);
        }
    }
    assert!(records.len() >= 4, "the first run spooled batches");
    let victim = &records[1];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[(victim.offset + 32 + u64::from(victim.header.len) / 2) as usize] ^= 0x5a;
    std::fs::write(&seg, bytes).unwrap();
    let victim_id = (victim.header.kind().unwrap(), victim.header.seq);

    let broker = Broker::start(free_port());
    let (shipper, metrics) = start_with_metrics(
        &broker.brokers(),
        "",
        StartOptions {
            output: "spool",
            data_dir: Some(data.path().to_path_buf()),
        },
    );
    let expected = records.len() as f64 - 1.0;
    kafka::wait_metric(
        &metrics,
        "the old spool shipped",
        Duration::from_secs(60),
        |m| {
            metric(m, "vigil_shipped_batches_total") >= expected
                && metric(m, "vigil_spool_corrupt_records_total") == 1.0
        },
    );
    let stderr = shipper.stderr();
    shipper.stop();
    assert!(
        stderr.contains("corrupt record skipped"),
        "the skip is logged: {stderr}"
    );

    let messages = kafka::read_all(&broker.brokers(), Duration::from_secs(60));
    let shipped: Vec<(EventKind, u64)> = messages.iter().map(|m| (m.kind(), m.seq())).collect();
    assert!(
        !shipped.contains(&victim_id),
        "the corrupt batch is not shipped"
    );
    for r in &records {
        let id = (r.header.kind().unwrap(), r.header.seq);
        if id != victim_id {
            assert!(
                shipped.contains(&id),
                "batch {id:?} after the corrupt one shipped"
            );
        }
    }
}

#[test]
fn topics_create_makes_every_kind_once() {
    let broker = Broker::start(free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[kafka]\nbrokers = \"{}\"\ntopic_prefix = \"t.\"\n[kafka.topics]\nfile = \"files\"\n",
            dir.path().display(),
            broker.brokers()
        ),
    )
    .unwrap();
    let run = || {
        let out = Command::new(vigil_e2e::workspace_bin("vigil-collector"))
            .arg("--config")
            .arg(&cfg)
            .args(["topics", "create"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run(),
        "t.process\tcreated\nfiles\tcreated\nt.network\tcreated\nt.collector\tcreated\n\
         t.quantum_job\tcreated\n"
    );
    assert_eq!(
        run(),
        "t.process\texists\nfiles\texists\nt.network\texists\nt.collector\texists\n\
         t.quantum_job\texists\n"
    );
}

/// The paths of the file events in the spool at `dir` that contain `tag`.
fn spooled_paths(dir: &Path, tag: &str) -> std::collections::BTreeSet<String> {
    use vigil_spool::{SpoolTail, Tailed};
    let mut tail = SpoolTail::open(dir, Default::default());
    let mut paths = std::collections::BTreeSet::new();
    loop {
        match tail.next_batch().expect("the spool reads") {
            Tailed::Batch { record, .. } => {
                if record.header.kind() != Some(EventKind::File) {
                    continue;
                }
                let (_, batches) = vigil_schema::ipc::decode(&record.payload).expect("Arrow IPC");
                for b in &batches {
                    for e in vigil_schema::arrow::decode_batch(b).expect("a file batch") {
                        let path = e.file.map(|f| f.path).unwrap_or_default();
                        if path.contains(tag) {
                            paths.insert(path);
                        }
                    }
                }
            }
            Tailed::Corrupt { .. } | Tailed::Skipped { .. } => {}
            Tailed::Idle => return paths,
        }
    }
}

#[test]
fn a_pipeline_error_still_spools_what_it_printed() {
    // stdout's reader goes away: the next write fails (EPIPE) and ends the
    // pipeline. Batches are closed only at exit here (a minute's interval),
    // so whatever was printed is still in memory when the error comes.
    use std::io::BufRead;
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = data.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[heartbeat]\ninterval_secs = 1\n[metrics]\nlisten = \"\"\n\
             [batch]\nflush_interval_ms = 60000\n",
            data.path().display()
        ),
    )
    .unwrap();
    let stderr_log = data.path().join("stderr.log");
    let mut child = Command::new(vigil_e2e::workspace_bin("vigil-collector"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--output",
            "stdout,spool",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .expect("spawn vigil-collector");
    let log = || std::fs::read_to_string(&stderr_log).unwrap_or_default();
    let started = std::time::Instant::now();
    while !log().contains("collector ready") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited early:\n{}",
            log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tag = marker("epipe");
    for i in 0..20 {
        std::fs::write(work.path().join(format!("{tag}-{i}")), b"x").unwrap();
    }
    // read until the 20 files were printed, then close the pipe
    let mut printed = std::collections::BTreeSet::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while printed.len() < 20 {
        let line = lines.next().expect("stdout open").expect("a line");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        if let Some(path) = v["file"]["path"].as_str().filter(|p| p.contains(&tag)) {
            printed.insert(path.to_string());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "files not printed"
        );
    }
    drop(lines);
    let mut status = None;
    while status.is_none() && started.elapsed() < Duration::from_secs(150) {
        status = child.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the collector kept running with its stdout closed:\n{}",
            log()
        );
    };
    assert!(!status.success(), "a broken stdout is an error exit");
    let spooled = spooled_paths(&data.path().join("spool"), &tag);
    let missing: Vec<&String> = printed.difference(&spooled).collect();
    assert!(
        missing.is_empty(),
        "printed but not spooled: {missing:?}\n{}",
        log()
    );
}

#[test]
fn the_spool_is_private_and_an_unsafe_data_directory_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // a data directory others can write to: refused at start, with the reason
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = open.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[metrics]\nlisten = \"\"\n",
            open.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(vigil_e2e::workspace_bin("vigil-collector"))
        .args(["--config", config.to_str().unwrap(), "--output", "spool"])
        .output()
        .expect("run vigil-collector");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started in a 0777 data directory");
    assert!(
        stderr.contains("writable by group or others")
            && stderr.contains(&open.path().display().to_string()),
        "{stderr}"
    );
    assert!(!open.path().join("spool").exists(), "spooled anyway");

    // a proper one: the spool directory is 0750 (setgid with a group), its files 0640
    let data = tempfile::tempdir().unwrap();
    let options = StartOptions {
        output: "spool",
        data_dir: Some(data.path().to_path_buf()),
    };
    let c = Collector::start_with("[metrics]\nlisten = \"\"\n", options);
    std::thread::sleep(Duration::from_millis(500));
    c.stop();
    let spool = data.path().join("spool");
    // the data directory too: the spool's readers must be able to enter it
    for dir in [data.path(), spool.as_path()] {
        let meta = std::fs::metadata(dir).unwrap();
        let mode = meta.mode() & 0o7777;
        assert!(
            mode == 0o750 || mode == 0o2750,
            "{} mode {mode:04o}",
            dir.display()
        );
        assert_eq!(meta.gid(), std::fs::metadata(&spool).unwrap().gid());
    }
    let mut files = 0;
    for entry in std::fs::read_dir(&spool).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640, "{} is {mode:03o}", entry.path().display());
        files += 1;
    }
    assert!(files >= 2, "a lock and a segment at least");
}
