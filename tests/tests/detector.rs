//! The detector end to end: the real `vigil-detector` binary reading
//! collector-format batches from a real broker (Tansu) or a spool directory,
//! with the built-in rules; alerts checked in the Parquet store and on the
//! `vigil.alerts` topic.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use vigil_detector::alerts::Alert;
use vigil_e2e::detector::{
    builtin_rules, examples_scenario, minute_now, produce, produce_raw, stored_alerts, unmet,
    DetectorProcess, Shipment, TestSpool,
};
use vigil_e2e::kafka::{free_port, Broker};
use vigil_schema::{EventKind, SCHEMA_VERSION};

const SETTLE: Duration = Duration::from_secs(120);

/// A consumed message: its headers and payload.
type Consumed = (Vec<(String, String)>, Vec<u8>);

/// Every message of the topic from the beginning.
fn read_topic(brokers: &str, topic: &str, at_least: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("e2e-{}", vigil_e2e::marker("reader")))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60)
        && (out.len() < at_least || start.elapsed() < Duration::from_secs(3))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((headers, m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

fn check_builtin_pack(alerts: &[Alert], expected: &[vigil_e2e::detector::Expectation], log: &str) {
    let failures = unmet(expected, alerts);
    assert!(
        failures.is_empty(),
        "{} unmet:\n{}\n--- log:\n{log}",
        failures.len(),
        failures.join("\n")
    );
    let rules: BTreeSet<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    let all: BTreeSet<String> = builtin_rules().into_iter().map(|r| r.id).collect();
    assert!(all.len() >= 15, "{} built-in rules", all.len());
    for r in &all {
        assert!(rules.contains(r.as_str()), "rule {r} raised nothing");
    }
    for a in alerts {
        assert!(
            !a.event_refs.is_empty()
                || a.rule_id == "quantum.job_rate_spike"
                || a.rule_id.starts_with("exfil.bytes")
                || a.rule_id == "collector.heartbeat_stopped",
            "{a:?} has no event references"
        );
        assert!(!a.summary.is_empty());
        assert!(serde_json::from_str::<serde_json::Value>(&a.evidence)
            .unwrap()
            .is_object());
    }
}

#[test]
fn builtin_rules_fire_end_to_end_through_kafka() {
    let broker = Broker::start(free_port());
    let rules = builtin_rules();
    let (shipments, expected) = examples_scenario(&rules, minute_now());
    produce(&broker.brokers(), &shipments);
    let dir = tempfile::tempdir().unwrap();
    let mut d = DetectorProcess::start(
        dir.path(),
        &format!(
            "[source.kafka]\nbrokers = {:?}\npartitions = 2\n",
            broker.brokers()
        ),
    );
    d.wait_metric(
        "vigil_detector_evaluated_messages",
        shipments.len() as f64,
        SETTLE,
    );
    let alerts = d.alerts();
    check_builtin_pack(&alerts, &expected, &d.log());
    // the same alerts on the alerts topic, as JSON
    let published = read_topic(&broker.brokers(), "vigil.alerts", alerts.len());
    let on_topic: BTreeSet<String> = published
        .iter()
        .map(|(h, p)| {
            let a: Alert = serde_json::from_slice(p).expect("alert JSON");
            assert!(h.iter().any(|(k, v)| k == "vigil.alert_id" && *v == a.id));
            a.id
        })
        .collect();
    let stored: BTreeSet<String> = alerts.iter().map(|a| a.id.clone()).collect();
    assert_eq!(on_topic, stored, "alerts topic and Parquet differ");
    assert_eq!(d.metric("vigil_detector_dead_letters_total"), 0.0);
    d.stop();
}

#[test]
fn builtin_rules_fire_end_to_end_through_the_spool() {
    let rules = builtin_rules();
    let (shipments, expected) = examples_scenario(&rules, minute_now());
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut spool = TestSpool::create(&spool_dir);
    for s in &shipments {
        spool.append(s);
    }
    let mut d = DetectorProcess::start(
        &dir.path().join("detector"),
        &format!("[source]\nspool = {spool_dir:?}\n"),
    );
    d.wait_metric(
        "vigil_detector_evaluated_messages",
        shipments.len() as f64,
        SETTLE,
    );
    check_builtin_pack(&d.alerts(), &expected, &d.log());
    // a second run over the same spool raises nothing new: ids are deterministic
    let before = d.alerts();
    d.stop();
    std::fs::remove_file(dir.path().join("detector/state/spool-position.json")).unwrap();
    let mut again = DetectorProcess::start(
        &dir.path().join("detector"),
        &format!("[source]\nspool = {spool_dir:?}\n"),
    );
    again.wait_metric(
        "vigil_detector_evaluated_messages",
        shipments.len() as f64,
        SETTLE,
    );
    assert_eq!(
        again.metric("vigil_detector_alerts_written_total"),
        0.0,
        "{}",
        again.log()
    );
    assert_eq!(again.alerts(), before);
    again.stop();
}

/// Filler traffic for one agent host: file opens in batches of `rows`.
fn filler(host: &str, seq: u64, at_ms: i64, rows: usize) -> Shipment {
    let events = (0..rows)
        .map(|i| {
            let mut e = vigil_schema::Event::new(
                EventKind::File,
                1001,
                14,
                "open",
                at_ms + i as i64,
                0,
                host,
                "h",
            );
            e.agent_id = Some("busy".into());
            e.process = Some(vigil_schema::Process {
                pid: 10,
                exe: "/usr/bin/python3".into(),
                ..Default::default()
            });
            e.file = Some(vigil_schema::FileActivity {
                path: format!("/home/ana/data/{i}.csv"),
                ..Default::default()
            });
            e
        })
        .collect();
    Shipment {
        kind: EventKind::File,
        host_id: host.into(),
        seq,
        events,
    }
}

#[test]
fn sigkill_mid_stream_then_restart_gives_the_alerts_of_an_uninterrupted_run() {
    let rules = builtin_rules();
    let end = minute_now();
    let (examples, expected) = examples_scenario(&rules, end);
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut spool = TestSpool::create(&spool_dir);
    let source = format!("[source]\nspool = {spool_dir:?}\n");
    let mut steady = DetectorProcess::start(&dir.path().join("steady"), &source);
    let mut victim = DetectorProcess::start(&dir.path().join("victim"), &source);
    // the examples arrive among filler batches, over a few seconds
    let mut total = 0;
    let mut filler_seq = 0;
    for (i, s) in examples.iter().enumerate() {
        spool.append(s);
        total += 1;
        if i % 4 == 0 {
            filler_seq += 1;
            spool.append(&filler("filler-host", filler_seq, s.max_time(), 2000));
            total += 1;
            std::thread::sleep(Duration::from_millis(60));
        }
        if i == examples.len() / 2 {
            // some alerts are stored, some positions committed: kill it
            victim.wait_metric("vigil_detector_alerts_written_total", 1.0, SETTLE);
            victim.kill();
            assert!(!victim.alerts().is_empty());
            victim = DetectorProcess::start(&dir.path().join("victim"), &source);
        }
    }
    steady.wait_metric("vigil_detector_evaluated_messages", total as f64, SETTLE);
    victim.wait_metric("vigil_detector_evaluated_messages", 1.0, SETTLE);
    // the restarted detector replays from its committed position: wait until it is at the end
    let steady_alerts = steady.alerts();
    let start = std::time::Instant::now();
    loop {
        let v = victim.alerts();
        let key = |a: &Alert| (a.id.clone(), a.rule_id.clone(), a.count);
        let vs: BTreeSet<_> = v.iter().map(key).collect();
        let ss: BTreeSet<_> = steady_alerts.iter().map(key).collect();
        if vs == ss {
            break;
        }
        assert!(
            start.elapsed() < SETTLE,
            "alert sets differ:\nonly steady: {:?}\nonly victim: {:?}\n--- victim log:\n{}",
            ss.difference(&vs).collect::<Vec<_>>(),
            vs.difference(&ss).collect::<Vec<_>>(),
            victim.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // no duplicate versions: each alert version was written once
    let (versions, _) =
        vigil_detector::alerts::store::read_all(&dir.path().join("victim")).unwrap();
    let mut seen = BTreeSet::new();
    for v in &versions {
        assert!(
            seen.insert((v.id.clone(), v.count)),
            "version {} count {} written twice",
            v.id,
            v.count
        );
    }
    assert!(unmet(&expected, &steady_alerts).is_empty());
    steady.stop();
    victim.stop();
}

#[test]
fn malformed_and_unknown_version_messages_go_to_the_dead_letter_topic() {
    let broker = Broker::start(free_port());
    let rules = builtin_rules();
    let (shipments, expected) = examples_scenario(&rules, minute_now());
    let cred: Vec<&Shipment> = shipments
        .iter()
        .filter(|s| s.host_id.starts_with("cred.store_read.ex"))
        .collect();
    vigil_e2e::detector::create_topics(&broker.brokers(), 2);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    // a batch whose schema says version 99
    let future = {
        let (id, batches) = vigil_schema::ipc::decode(&cred[0].arrow()).unwrap();
        let b = &batches[0];
        let mut meta = b.schema().metadata().clone();
        meta.insert("vigil.schema_version".into(), "99".into());
        let schema = std::sync::Arc::new(b.schema().as_ref().clone().with_metadata(meta));
        let b = arrow_array::RecordBatch::try_new(schema, b.columns().to_vec()).unwrap();
        vigil_schema::ipc::encode(&b, &id.host_id, 50, vigil_schema::ipc::Compression::None)
            .unwrap()
    };
    // valid, garbage, valid, a future schema version, valid
    produce_raw(
        &producer,
        cred[0].kind,
        &cred[0].host_id,
        cred[0].seq,
        &cred[0].arrow(),
        SCHEMA_VERSION,
    );
    produce_raw(
        &producer,
        EventKind::File,
        "bad-host",
        1,
        b"this is not arrow",
        SCHEMA_VERSION,
    );
    produce_raw(
        &producer,
        cred[1].kind,
        &cred[1].host_id,
        cred[1].seq,
        &cred[1].arrow(),
        SCHEMA_VERSION,
    );
    produce_raw(
        &producer,
        EventKind::File,
        &cred[0].host_id,
        50,
        &future,
        99,
    );
    produce_raw(
        &producer,
        cred[2].kind,
        &cred[2].host_id,
        cred[2].seq,
        &cred[2].arrow(),
        SCHEMA_VERSION,
    );
    producer.flush(Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut d = DetectorProcess::start(
        dir.path(),
        &format!("[source.kafka]\nbrokers = {:?}\n", broker.brokers()),
    );
    d.wait_metric("vigil_detector_evaluated_messages", 5.0, SETTLE);
    assert_eq!(d.metric("vigil_detector_dead_letters_total"), 2.0);
    // the valid messages around them were processed
    let alerts = d.alerts();
    let exp: Vec<_> = expected
        .iter()
        .filter(|e| e.rule_id == "cred.store_read" && cred[..3].iter().any(|s| s.host_id == e.host))
        .cloned()
        .collect();
    assert_eq!(exp.len(), 3);
    let failures = unmet(&exp, &alerts);
    assert!(failures.is_empty(), "{failures:?}\n{}", d.log());
    let dead = read_topic(&broker.brokers(), "vigil.deadletter", 2);
    assert_eq!(dead.len(), 2, "dead letters: {dead:?}");
    // dead letters are keyed by host: order them by their reason
    let mut reasons: Vec<(String, &Consumed)> = dead
        .iter()
        .map(|m| {
            let reason =
                m.0.iter()
                    .find(|(k, _)| k == "vigil.dead_letter.reason")
                    .map(|(_, v)| v.clone())
                    .expect("reason header");
            (reason, m)
        })
        .collect();
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        reasons[0].0.contains("not a Vigil Arrow batch"),
        "{}",
        reasons[0].0
    );
    assert_eq!(reasons[0].1 .1, b"this is not arrow");
    assert!(
        reasons[1].0.contains("unknown schema version 99"),
        "{}",
        reasons[1].0
    );
    for (_, m) in &reasons {
        assert!(m
            .0
            .iter()
            .any(|(k, v)| k == "vigil.dead_letter.origin" && v.starts_with("vigil.events.file[")));
    }
    d.stop();
}

#[test]
fn a_corrupt_payload_in_the_spool_goes_to_the_dead_letter_directory() {
    let rules = builtin_rules();
    let (shipments, _) = examples_scenario(&rules, minute_now());
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut spool = TestSpool::create(&spool_dir);
    spool.append_raw(EventKind::Network, 3, b"\xff\xff\xff\xff garbage");
    for s in &shipments {
        spool.append(s);
    }
    let mut d = DetectorProcess::start(
        &dir.path().join("detector"),
        &format!("[source]\nspool = {spool_dir:?}\n"),
    );
    d.wait_metric(
        "vigil_detector_evaluated_messages",
        shipments.len() as f64 + 1.0,
        SETTLE,
    );
    assert_eq!(d.metric("vigil_detector_dead_letters_total"), 1.0);
    let index =
        std::fs::read_to_string(dir.path().join("detector/deadletter/index.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(index.lines().next().unwrap()).unwrap();
    assert_eq!(line["kind"], "network");
    assert!(line["reason"]
        .as_str()
        .unwrap()
        .contains("not a Vigil Arrow batch"));
    let kept = std::fs::read(
        dir.path()
            .join("detector/deadletter")
            .join(line["file"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(kept, b"\xff\xff\xff\xff garbage");
    assert!(!d.alerts().is_empty());
    d.stop();
    let _ = stored_alerts(&dir.path().join("detector"));
}

#[test]
fn the_readme_demo_raises_alerts_from_the_real_collector() {
    // the real collector (BPF) writes its spool; the detector reads it; the
    // README's one-line demo plays an agent reading credentials, then posting them
    let dir = tempfile::tempdir().unwrap();
    let agent = vigil_e2e::marker("demo");
    let collector = vigil_e2e::Collector::start_with(
        &format!("[[agents]]\nname = \"{agent}\"\ncmdline = 'scripts/demo-agent exfil'\n"),
        vigil_e2e::StartOptions {
            output: "spool",
            data_dir: Some(dir.path().join("collector")),
        },
    );
    let spool_dir = dir.path().join("collector/spool");
    let mut d = DetectorProcess::start(
        &dir.path().join("detector"),
        &format!("[source]\nspool = {spool_dir:?}\n"),
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new("bash")
        .arg("scripts/demo-agent")
        .arg("exfil")
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    let start = std::time::Instant::now();
    let want = [
        "cred.store_read",
        "exfil.read_then_new_egress",
        "network.agent_listen",
    ];
    loop {
        let alerts = d.alerts();
        let ours: BTreeSet<&str> = alerts
            .iter()
            .filter(|a| a.agent_id.as_deref() == Some(agent.as_str()))
            .map(|a| a.rule_id.as_str())
            .collect();
        if want.iter().all(|w| ours.contains(w)) {
            let cred = alerts
                .iter()
                .find(|a| a.rule_id == "cred.store_read")
                .unwrap();
            assert!(cred.summary.contains("/home/.aws/credentials"), "{cred:?}");
            assert!(cred.agent_session.is_some());
            let exfil = alerts
                .iter()
                .find(|a| a.rule_id == "exfil.read_then_new_egress")
                .unwrap();
            assert!(exfil.summary.contains("/usr/bin/curl"), "{exfil:?}");
            assert_eq!(exfil.severity, "critical");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "alerts so far: {:?}\n--- detector log:\n{}\n--- collector log:\n{}",
            alerts
                .iter()
                .map(|a| (&a.rule_id, &a.summary))
                .collect::<Vec<_>>(),
            d.log(),
            collector.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    d.stop();
    collector.stop();
}
