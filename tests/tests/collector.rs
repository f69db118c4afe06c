//! The collector against the real kernel: process trees and agent sessions,
//! exact process details, file byte counts, TCP/UDP flows, redaction.
//!
//! Needs root (CI runs as root). Without BPF the collector fails to start
//! and so does every test here.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_e2e::{get, is, marker, str_at, u64_at, Collector, Value};

const WAIT: Duration = Duration::from_secs(15);

fn args_of(ev: &Value) -> Vec<String> {
    get(ev, "process.args")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_of(ev: &Value) -> u64 {
    u64_at(ev, "process.pid").unwrap_or(0)
}

#[test]
fn agent_session_follows_fork_exec_and_reparented_orphan() {
    let m = marker("agent");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(format!("{m}.sh"));
    let orphan_mark = format!("{m}-orphan");
    // level 1: the agent (bash running the script)
    // level 2: bash -c (fork + exec), which starts
    // level 3: sh -c that re-execs env, which execs true (exec, re-exec)
    // and a subshell that outlives level 2 (re-parented), then execs touch.
    std::fs::write(
        &script,
        format!(
            r#"
/bin/bash -c '
  /bin/sh -c "exec /usr/bin/env /bin/true {m}-level3"
  ( sleep 0.5; exec /usr/bin/touch {dir}/{orphan_mark} ) &
  exit 0
'
for i in $(seq 1 50); do [ -e {dir}/{orphan_mark} ] && break; sleep 0.1; done
"#,
            dir = dir.path().display()
        ),
    )
    .unwrap();

    let c = Collector::start(&format!(
        "[[agents]]\nname = \"test-agent\"\ncmdline = '{m}\\.sh'\n"
    ));
    let status = Command::new("/bin/bash").arg(&script).status().unwrap();
    assert!(status.success());
    let unrelated = Command::new("/usr/bin/env")
        .args(["/bin/true", &format!("{m}-unrelated")])
        .status()
        .unwrap();
    assert!(unrelated.success());

    let exec = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        c.wait_for(what, WAIT, |e| is(e, "process", "launch") && pred(e))
    };
    let agent = exec("agent exec", &|e| {
        str_at(e, "process.cmd_line").ends_with(&format!("{m}.sh"))
    });
    let session = str_at(&agent, "agent_session").to_string();
    assert!(
        !session.is_empty(),
        "agent exec carries no session: {agent:#}"
    );
    assert_eq!(agent["agent_id"], "test-agent");
    assert_eq!(
        session,
        str_at(&agent, "process.uid_exec"),
        "session id is the agent process's exec id"
    );

    let level2 = exec("level 2 bash", &|e| {
        args_of(e).first().map(String::as_str) == Some("/bin/bash")
            && args_of(e).get(1).map(String::as_str) == Some("-c")
            && str_at(e, "process.cmd_line").contains(&orphan_mark)
    });
    assert_eq!(u64_at(&level2, "parent_process.pid"), Some(pid_of(&agent)));
    let sh = exec("level 3 sh", &|e| {
        args_of(e).first().map(String::as_str) == Some("/bin/sh")
            && str_at(e, "process.cmd_line").contains(&format!("{m}-level3"))
    });
    assert_eq!(u64_at(&sh, "parent_process.pid"), Some(pid_of(&level2)));
    let env = exec("level 3 re-exec of env", &|e| {
        args_of(e) == ["/usr/bin/env", "/bin/true", &format!("{m}-level3")]
    });
    assert_eq!(pid_of(&env), pid_of(&sh), "exec keeps the pid");
    let tru = exec("level 3 exec of true", &|e| {
        args_of(e) == ["/bin/true", &format!("{m}-level3")]
    });
    let touch = exec("orphan exec", &|e| {
        str_at(e, "process.cmd_line").contains(&orphan_mark)
            && args_of(e).first().map(String::as_str) == Some("/usr/bin/touch")
    });
    assert_ne!(
        u64_at(&touch, "parent_process.pid"),
        Some(pid_of(&level2)),
        "the orphan should have been re-parented away from level 2: {touch:#}"
    );
    for (name, ev) in [
        ("level2", &level2),
        ("sh", &sh),
        ("env", &env),
        ("true", &tru),
        ("orphan", &touch),
    ] {
        assert_eq!(ev["agent_id"], "test-agent", "{name}: {ev:#}");
        assert_eq!(str_at(ev, "agent_session"), session, "{name}: {ev:#}");
    }
    let other = exec("unrelated exec", &|e| {
        args_of(e) == ["/bin/true", &format!("{m}-unrelated")]
    });
    assert!(
        other.get("agent_id").is_none() && other.get("agent_session").is_none(),
        "{other:#}"
    );
    c.stop();
}

#[test]
fn process_details_are_exact_and_old_processes_are_enriched() {
    let m = marker("details");
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let out_file = cwd.join(format!("{m}.out"));
    // started before the collector: waits for a line, then writes it with a shell redirect
    let mut old = Command::new("/bin/sh")
        .args(["-c", &format!("read line; echo \"$line\" > {m}.out"), &m])
        .current_dir(&cwd)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let c = Collector::start(&format!("host_id = \"host-{m}\"\n"));
    let child = Command::new("/bin/sh")
        .args(["-c", &format!("exit 7 # {m}")])
        .current_dir(&cwd)
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap();
    assert_eq!(child.code(), Some(7));
    writeln!(old.stdin.take().unwrap(), "hello").unwrap();
    assert!(old.wait().unwrap().success());

    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let launch = c.wait_for("child exec", WAIT, |e| {
        is(e, "process", "launch")
            && str_at(e, "process.cmd_line").contains(&format!("exit 7 # {m}"))
    });
    assert_eq!(str_at(&launch, "process.exe"), sh.to_str().unwrap());
    assert_eq!(
        args_of(&launch),
        ["/bin/sh", "-c", &format!("exit 7 # {m}")]
    );
    assert_eq!(str_at(&launch, "process.cwd"), cwd.to_str().unwrap());
    assert_eq!(u64_at(&launch, "process.user_id"), Some(65534));
    assert_eq!(u64_at(&launch, "process.group_id"), Some(65534));
    assert_eq!(
        u64_at(&launch, "parent_process.pid"),
        Some(std::process::id() as u64)
    );
    assert_eq!(str_at(&launch, "process.source"), "exec");
    assert_eq!(
        str_at(&launch, "host_id"),
        format!("host-{m}"),
        "configured host_id overrides /etc/machine-id"
    );
    assert!(!str_at(&launch, "hostname").is_empty());
    let pid = pid_of(&launch);
    let exit = c.wait_for("child exit", WAIT, |e| {
        is(e, "process", "terminate") && pid_of(e) == pid
    });
    assert_eq!(u64_at(&exit, "exit.code"), Some(7));

    // the old process, seen only through /proc at start-up
    let open = c.wait_for("old process writes", WAIT, |e| {
        is(e, "file", "open") && str_at(e, "file.path") == out_file.to_str().unwrap()
    });
    assert_eq!(pid_of(&open), old.id() as u64);
    assert_eq!(str_at(&open, "process.source"), "procfs");
    assert_eq!(str_at(&open, "process.exe"), sh.to_str().unwrap());
    assert_eq!(
        args_of(&open),
        [
            "/bin/sh",
            "-c",
            &format!("read line; echo \"$line\" > {m}.out"),
            &m
        ]
    );
    assert_eq!(str_at(&open, "process.cwd"), cwd.to_str().unwrap());
    assert_eq!(
        u64_at(&open, "parent_process.pid"),
        Some(std::process::id() as u64)
    );
    c.stop();
}

#[test]
fn file_bytes_are_exact_and_missing_files_report_the_error() {
    let m = marker("file");
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let c = Collector::start("");
    let script = format!(
        "head -c 12345 /dev/zero > {m}.dat && cat {m}.dat > /dev/null && cat {cwd}/{m}-missing 2>/dev/null; \
         mv {m}.dat {m}.moved && rm {m}.moved; exit 0",
        cwd = cwd.display()
    );
    assert!(Command::new("/bin/sh")
        .args(["-c", &script])
        .current_dir(&cwd)
        .status()
        .unwrap()
        .success());
    let path = cwd.join(format!("{m}.dat"));
    let path = path.to_str().unwrap();

    let written = c.wait_for("close after write", WAIT, |e| {
        is(e, "file", "close")
            && str_at(e, "file.path") == path
            && u64_at(e, "file.bytes_written") != Some(0)
    });
    assert_eq!(
        u64_at(&written, "file.bytes_written"),
        Some(12345),
        "{written:#}"
    );
    assert_eq!(u64_at(&written, "file.bytes_read"), Some(0));
    assert_eq!(str_at(&written, "process.comm"), "head");
    let read = c.wait_for("close after read", WAIT, |e| {
        is(e, "file", "close")
            && str_at(e, "file.path") == path
            && str_at(e, "process.comm") == "cat"
    });
    assert_eq!(u64_at(&read, "file.bytes_read"), Some(12345), "{read:#}");
    assert_eq!(u64_at(&read, "file.bytes_written"), Some(0));

    let missing = cwd.join(format!("{m}-missing"));
    let failed = c.wait_for("failed open", WAIT, |e| {
        is(e, "file", "open") && str_at(e, "file.path") == missing.to_str().unwrap()
    });
    assert_eq!(get(&failed, "file.result").as_i64(), Some(-2));
    assert_eq!(str_at(&failed, "file.error"), "ENOENT");

    let moved = cwd.join(format!("{m}.moved"));
    let moved = moved.to_str().unwrap();
    let rename = c.wait_for("rename", WAIT, |e| {
        is(e, "file", "rename") && str_at(e, "file.path") == path
    });
    assert_eq!(str_at(&rename, "file.new_path"), moved);
    assert_eq!(get(&rename, "file.result").as_i64(), Some(0));
    assert_eq!(str_at(&rename, "process.comm"), "mv");
    let delete = c.wait_for("delete", WAIT, |e| {
        is(e, "file", "delete") && str_at(e, "file.path") == moved
    });
    assert_eq!(get(&delete, "file.result").as_i64(), Some(0));
    assert_eq!(str_at(&delete, "process.comm"), "rm");
    c.stop();
}

fn tcp_exchange(c: &Collector, bind: &str) {
    let listener = TcpListener::bind(bind).unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(server_addr).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(&[1u8; 1000]).unwrap();
    let mut buf = vec![0u8; 1000];
    server.read_exact(&mut buf).unwrap();
    server.write_all(&[2u8; 333]).unwrap();
    let mut buf = vec![0u8; 333];
    client.read_exact(&mut buf).unwrap();
    drop(client);
    drop(server);

    let me = std::process::id() as u64;
    let port = server_addr.port() as u64;
    let ip = server_addr.ip().to_string();
    let connect = c.wait_for("connect", WAIT, |e| {
        is(e, "network", "connect")
            && pid_of(e) == me
            && u64_at(e, "network.dst_endpoint.port") == Some(port)
    });
    assert_eq!(str_at(&connect, "network.protocol"), "tcp");
    assert_eq!(str_at(&connect, "network.dst_endpoint.ip"), ip);
    assert_eq!(
        u64_at(&connect, "network.src_endpoint.port"),
        Some(client_port as u64)
    );
    let accept = c.wait_for("accept", WAIT, |e| {
        is(e, "network", "accept")
            && pid_of(e) == me
            && u64_at(e, "network.src_endpoint.port") == Some(client_port as u64)
    });
    assert_eq!(u64_at(&accept, "network.dst_endpoint.port"), Some(port));
    assert_eq!(str_at(&accept, "network.direction"), "inbound");

    let client_close = c.wait_for("client close", WAIT, |e| {
        is(e, "network", "close")
            && pid_of(e) == me
            && str_at(e, "network.direction") == "outbound"
            && u64_at(e, "network.src_endpoint.port") == Some(client_port as u64)
    });
    assert_eq!(
        u64_at(&client_close, "network.bytes_out"),
        Some(1000),
        "{client_close:#}"
    );
    assert_eq!(u64_at(&client_close, "network.bytes_in"), Some(333));
    assert_eq!(
        str_at(&client_close, "network.flow_id"),
        str_at(&connect, "network.flow_id")
    );
    let server_close = c.wait_for("server close", WAIT, |e| {
        is(e, "network", "close")
            && pid_of(e) == me
            && str_at(e, "network.direction") == "inbound"
            && u64_at(e, "network.src_endpoint.port") == Some(client_port as u64)
    });
    assert_eq!(
        u64_at(&server_close, "network.bytes_in"),
        Some(1000),
        "{server_close:#}"
    );
    assert_eq!(u64_at(&server_close, "network.bytes_out"), Some(333));
}

#[test]
fn tcp_exchange_reports_both_ends_with_exact_bytes_ipv4_and_ipv6() {
    let c = Collector::start("");
    tcp_exchange(&c, "127.0.0.1:0");
    tcp_exchange(&c, "[::1]:0");
    // at exit the collector reports its counters, drops included
    let events = c.stop();
    let last = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "collector")
        .expect("a final collector event");
    assert!(
        u64_at(last, "collector.events_total").unwrap() > 0,
        "{last:#}"
    );
    assert!(
        get(last, "collector.kernel_drops").get("exec").is_some(),
        "{last:#}"
    );
    assert!(
        u64_at(last, "collector.kernel_drops_total").is_some(),
        "{last:#}"
    );
}

#[test]
fn long_lived_flows_report_traffic_at_the_configured_interval() {
    let c = Collector::start("[network]\nflow_report_interval_secs = 1\n");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let port = client.local_addr().unwrap().port() as u64;
    let (mut server, _) = listener.accept().unwrap();
    let me = std::process::id() as u64;
    let traffic = |what: &str, out: u64| {
        c.wait_for(what, WAIT, |e| {
            is(e, "network", "traffic")
                && pid_of(e) == me
                && str_at(e, "network.direction") == "outbound"
                && u64_at(e, "network.src_endpoint.port") == Some(port)
                && u64_at(e, "network.bytes_out") == Some(out)
        })
    };
    let mut sink = vec![0u8; 1000];
    client.write_all(&[0u8; 500]).unwrap();
    server.read_exact(&mut sink[..500]).unwrap();
    let first = traffic("first interval", 500);
    client.write_all(&[0u8; 200]).unwrap();
    server.read_exact(&mut sink[..200]).unwrap();
    let second = traffic("second interval: the delta only", 200);
    assert_eq!(
        str_at(&first, "network.flow_id"),
        str_at(&second, "network.flow_id")
    );
    drop(client);
    let close = c.wait_for("close with totals", WAIT, |e| {
        is(e, "network", "close")
            && pid_of(e) == me
            && u64_at(e, "network.src_endpoint.port") == Some(port)
            && str_at(e, "network.direction") == "outbound"
    });
    assert_eq!(u64_at(&close, "network.bytes_out"), Some(700));
    drop(server);
    c.stop();
}

#[test]
fn udp_send_reports_peer_and_exact_bytes() {
    let c = Collector::start("");
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let from_port = sender.local_addr().unwrap().port() as u64;
    sender.send_to(&[7u8; 77], to).unwrap();
    sender.send_to(&[7u8; 23], to).unwrap();
    let mut buf = [0u8; 200];
    assert_eq!(receiver.recv_from(&mut buf).unwrap().0, 77);
    assert_eq!(receiver.recv_from(&mut buf).unwrap().0, 23);
    drop(sender);
    drop(receiver);

    let me = std::process::id() as u64;
    let send = c.wait_for("udp send", WAIT, |e| {
        is(e, "network", "send")
            && pid_of(e) == me
            && u64_at(e, "network.src_endpoint.port") == Some(from_port)
    });
    assert_eq!(str_at(&send, "network.protocol"), "udp");
    assert_eq!(
        u64_at(&send, "network.dst_endpoint.port"),
        Some(to.port() as u64)
    );
    let close = c.wait_for("udp sender close", WAIT, |e| {
        is(e, "network", "close")
            && pid_of(e) == me
            && u64_at(e, "network.src_endpoint.port") == Some(from_port)
    });
    assert_eq!(u64_at(&close, "network.bytes_out"), Some(100), "{close:#}");
    assert_eq!(u64_at(&close, "network.packets_out"), Some(2));
    let rclose = c.wait_for("udp receiver close", WAIT, |e| {
        is(e, "network", "close")
            && pid_of(e) == me
            && u64_at(e, "network.src_endpoint.port") == Some(to.port() as u64)
    });
    assert_eq!(u64_at(&rclose, "network.bytes_in"), Some(100), "{rclose:#}");
    c.stop();
}

#[test]
fn secrets_on_command_lines_never_leave_the_collector() {
    let m = marker("secret");
    let secrets = [
        format!("tok{m}A"),
        format!("key{m}B"),
        format!("bear{m}C"),
        "AKIAIOSFODNN7EXAMPLE".to_string(),
        "0123456789abcdef".repeat(8),
        format!("custom{m}D"),
    ];
    let c = Collector::start(&format!("[redaction]\npatterns = ['custom{m}[A-Z]']\n"));
    let status = Command::new("/bin/sh")
        .args([
            "-c",
            "exit 0",
            &m,
            &format!("--token={}", secrets[0]),
            "--api-key",
            &secrets[1],
            &format!("Authorization: Bearer {}", secrets[2]),
            &secrets[3],
            &secrets[4],
            &secrets[5],
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let launch = c.wait_for("exec with secrets", WAIT, |e| {
        is(e, "process", "launch") && args_of(e).get(3) == Some(&m)
    });
    assert_eq!(
        args_of(&launch)[4..],
        [
            "--token=[REDACTED]",
            "--api-key",
            "[REDACTED]",
            "Authorization: Bearer [REDACTED]",
            "[REDACTED]",
            "[REDACTED]",
            "[REDACTED]"
        ]
    );
    c.wait_for("exit of the process", WAIT, |e| {
        is(e, "process", "terminate") && pid_of(e) == pid_of(&launch)
    });
    let output = c.raw_output();
    for s in &secrets {
        assert!(
            !output.contains(s.as_str()),
            "secret {s} appears in the output"
        );
    }
    c.stop();
}

/// Start the collector on a config text; it must refuse: exit 2, stderr returned.
fn refused_config(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(vigil_e2e::workspace_bin("vigil-collector"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "config accepted: {text}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_config_names_the_key_and_stops_start_up() {
    let stderr = refused_config("data_dir = \"/tmp\"\n[[agents]]\nname = \"x\"\ncmdline = \"(\"\n");
    assert!(
        stderr.contains("agents[0].cmdline") && stderr.contains("regex"),
        "{stderr}"
    );
    let stderr = refused_config("data_dir = \"/tmp\"\n[bpf]\nring_bufer_bytes = 4096\n");
    assert!(
        stderr.contains("ring_bufer_bytes") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[test]
fn missing_bpf_capability_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "data_dir = \"/tmp\"\n").unwrap();
    // run a copy from a directory an unprivileged user can reach
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("vigil-collector");
    std::fs::copy(vigil_e2e::workspace_bin("vigil-collector"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // printed only: no spool, whose data directory (/tmp) would be refused first
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&path)
        .args(["--output", "stdout"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
}
