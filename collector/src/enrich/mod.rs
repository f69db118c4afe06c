//! Enrichment: kernel records in, schema events out.
//!
//! The [`Enricher`] keeps the process table and the open files and flows of
//! every process, resolves relative paths, stamps host and agent identity on
//! every event and redacts secrets from command lines.

pub mod agents;
mod connections;
pub mod process_table;
pub mod procfs;
pub mod redact;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use vigil_schema::{
    ocsf, Endpoint, Event, EventKind, ExitStatus, FileActivity, NetworkActivity, ProcessContext,
};

use crate::source::records::{self, kind, Header, IoClose, Record, SockAddr};
use process_table::{ProcEntry, ProcessTable, Source};
use procfs::{CgroupPaths, Users};
use redact::Redactor;

const AT_FDCWD: i32 = -100;

/// Host identity stamped on every event.
#[derive(Debug, Clone)]
pub struct Host {
    pub host_id: String,
    pub hostname: String,
}

impl Host {
    /// `host_id` from the config, else /etc/machine-id; hostname from uname.
    pub fn detect(configured: Option<&str>) -> std::io::Result<Host> {
        let host_id = match configured {
            Some(id) => id.to_string(),
            None => std::fs::read_to_string("/etc/machine-id")
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot read /etc/machine-id ({e}); set host_id in the config"),
                    )
                })?
                .trim()
                .to_string(),
        };
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Host { host_id, hostname })
    }
}

/// What the collector remembers of an open fd between its open and close.
#[derive(Debug, Clone)]
struct OpenFd {
    open_id: u64,
    path: Option<String>,
    /// Sockets: accepted (the peer initiated) rather than connected.
    inbound: bool,
    /// Bytes already reported by interval traffic events (sockets).
    reported_in: u64,
    reported_out: u64,
}

/// One event ready for a sink: the event's own fields, and its process
/// context (`agent_id`, `agent_session`, `process`, `parent_process`,
/// `ancestors`), built once per process and shared by all its events.
pub struct Output {
    pub event: Event,
    pub context: Option<Arc<SharedContext>>,
}

/// A process context and, rendered on first use, its JSON members (without
/// braces) for the stdout sink to splice into each event object.
pub struct SharedContext {
    pub data: Arc<ProcessContext>,
    json: OnceLock<Box<str>>,
}

impl SharedContext {
    pub fn new(data: ProcessContext) -> Self {
        Self {
            data: Arc::new(data),
            json: OnceLock::new(),
        }
    }

    pub fn json_members(&self) -> &str {
        self.json.get_or_init(|| {
            let json = serde_json::to_string(&*self.data).expect("context serialises");
            json[1..json.len() - 1].into()
        })
    }
}

/// Rendered contexts stay valid until any process changes (exec, exit, chdir,
/// a process added late): then `generation` moves on and they are re-rendered.
const CONTEXT_CACHE_MAX: usize = 4096;

pub struct Enricher {
    host: Host,
    generation: u64,
    contexts: HashMap<(u32, u32), (u64, Arc<SharedContext>)>,
    boot_wall_ms: i64,
    table: ProcessTable,
    redactor: Redactor,
    cgroups: CgroupPaths,
    users: Users,
    open_fds: HashMap<u32, HashMap<i32, OpenFd>>,
    connections: connections::Connections,
}

impl Enricher {
    pub fn new(host: Host, table: ProcessTable, redactor: Redactor) -> Self {
        Self {
            host,
            generation: 0,
            contexts: HashMap::new(),
            boot_wall_ms: procfs::boot_wall_ms(),
            table,
            redactor,
            cgroups: CgroupPaths::new("/sys/fs/cgroup"),
            users: Users::default(),
            open_fds: HashMap::new(),
            connections: connections::Connections::default(),
        }
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn processes(&self) -> usize {
        self.table.len()
    }

    /// Seed the process table from /proc.
    pub fn seed_from_proc(&mut self) -> usize {
        let mut entries = procfs::scan(Path::new("/proc"), &self.redactor);
        for e in &mut entries {
            self.fill_ids(e);
        }
        let n = entries.len();
        self.table.seed(entries);
        n
    }

    fn fill_ids(&mut self, e: &mut ProcEntry) {
        e.user = self.users.name(e.uid).to_string();
        if e.cgroup_id == 0 {
            e.cgroup_id = self.cgroups.id_of(&e.cgroup).unwrap_or(0);
        }
    }

    /// Make sure a process seen in a record is in the table (it may predate
    /// the collector's view, or its exec record may have been dropped).
    fn ensure(&mut self, h: &Header) {
        if self.table.get(h.tgid).is_some() {
            return;
        }
        let mut e = procfs::read_process(Path::new("/proc"), h.tgid, &self.redactor)
            .unwrap_or_else(|| ProcEntry {
                pid: h.tgid,
                ppid: 0,
                start_boottime_ns: h.ts_ns,
                uid_exec: String::new(),
                exe: String::new(),
                args: Vec::new(),
                cmd_line: String::new(),
                cwd: String::new(),
                comm: records::cstr(&h.comm),
                uid: u32::MAX,
                gid: u32::MAX,
                user: String::new(),
                cgroup_id: h.cgroup_id,
                cgroup: String::new(),
                source: Source::Procfs,
                truncated: false,
                agent: None,
                parent_exe: String::new(),
                parent_uid_exec: String::new(),
            });
        self.fill_ids(&mut e);
        self.table.seed(vec![e]);
        self.invalidate();
    }

    fn event(
        &mut self,
        kind: EventKind,
        class_uid: u32,
        activity_id: u32,
        activity_name: &str,
        h: &Header,
        pid: u32,
    ) -> Output {
        let event = Event::new(
            kind,
            class_uid,
            activity_id,
            activity_name,
            self.boot_wall_ms + (h.ts_ns / 1_000_000) as i64,
            h.ts_ns,
            &self.host.host_id,
            &self.host.hostname,
        );
        let tid = if pid == h.tgid { h.tid } else { pid };
        Output {
            event,
            context: self.context(pid, tid),
        }
    }

    /// The context of a process by pid, reading it from /proc if the table
    /// does not know it yet (the job gateway's callers).
    pub fn context_of_process(&mut self, pid: u32) -> Option<Arc<SharedContext>> {
        if self.table.get(pid).is_none() {
            let mut e = procfs::read_process(Path::new("/proc"), pid, &self.redactor)?;
            self.fill_ids(&mut e);
            self.table.seed(vec![e]);
            self.invalidate();
        }
        self.context(pid, pid)
    }

    /// The process that made the loopback TCP connection `src` → `dst`, as
    /// the kernel reported its connect.
    pub fn connection_owner(&self, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        self.connections.owner(src, dst)
    }

    /// The context of a process (thread), from the cache when nothing changed.
    fn context(&mut self, pid: u32, tid: u32) -> Option<Arc<SharedContext>> {
        if let Some((generation, context)) = self.contexts.get(&(pid, tid)) {
            if *generation == self.generation {
                return Some(context.clone());
            }
        }
        let entry = self.table.get(pid)?;
        let d = self.table.describe(entry, tid, self.boot_wall_ms);
        let context = Arc::new(SharedContext::new(ProcessContext {
            agent_id: d.agent.as_ref().map(|a| a.agent_id.clone()),
            agent_session: d.agent.as_ref().map(|a| a.session.clone()),
            process: d.process,
            parent_process: d.parent,
            ancestors: d.ancestors,
        }));
        if self.contexts.len() >= CONTEXT_CACHE_MAX {
            self.contexts.clear();
        }
        self.contexts
            .insert((pid, tid), (self.generation, context.clone()));
        Some(context)
    }

    /// A process changed: every rendered context may be stale.
    fn invalidate(&mut self) {
        self.generation += 1;
    }

    /// Turn one kernel record into zero or more events.
    pub fn handle(&mut self, rec: &Record<'_>, out: &mut Vec<Output>) {
        match rec {
            Record::Exec {
                rec,
                exe,
                cwd,
                args,
            } => {
                let mut argv = records::argv(args);
                self.redactor.redact_args(&mut argv);
                let mut e = ProcEntry {
                    pid: rec.h.tgid,
                    ppid: rec.ppid,
                    start_boottime_ns: rec.start_boottime_ns,
                    uid_exec: String::new(),
                    exe: records::dpath(exe),
                    cmd_line: argv.join(" "),
                    args: argv,
                    cwd: records::dpath(cwd),
                    comm: records::cstr(&rec.h.comm),
                    uid: rec.uid,
                    gid: rec.gid,
                    user: String::new(),
                    cgroup_id: rec.h.cgroup_id,
                    cgroup: self
                        .cgroups
                        .path(rec.h.cgroup_id)
                        .unwrap_or_default()
                        .to_string(),
                    source: Source::Exec,
                    truncated: rec.flags
                        & (records::F_ARGS_TRUNCATED
                            | records::F_EXE_TRUNCATED
                            | records::F_CWD_TRUNCATED)
                        != 0,
                    agent: None,
                    parent_exe: String::new(),
                    parent_uid_exec: String::new(),
                };
                self.fill_ids(&mut e);
                self.invalidate();
                if self.table.get(rec.ppid).is_none() && rec.ppid != 0 {
                    let parent = Header {
                        tgid: rec.ppid,
                        ..rec.h
                    };
                    self.ensure(&parent);
                }
                self.table.exec(e);
                out.push(self.event(
                    EventKind::Process,
                    ocsf::CLASS_PROCESS_ACTIVITY,
                    ocsf::process::LAUNCH,
                    "launch",
                    &rec.h,
                    rec.h.tgid,
                ));
            }
            Record::Fork(rec) => {
                self.ensure(&rec.h);
                self.table.fork(rec.h.tgid, rec.child_pid, rec.h.ts_ns);
                // the kernel copied the tracking of the parent's low fds: mirror it
                if let Some(parent_fds) = self.open_fds.get(&rec.h.tgid) {
                    let inherited: HashMap<i32, OpenFd> = parent_fds
                        .iter()
                        .filter(|(fd, _)| (0..records::INHERIT_FDS).contains(*fd))
                        .map(|(fd, o)| {
                            (
                                *fd,
                                OpenFd {
                                    reported_in: 0,
                                    reported_out: 0,
                                    ..o.clone()
                                },
                            )
                        })
                        .collect();
                    self.open_fds.insert(rec.child_pid, inherited);
                }
                let mut ev = self.event(
                    EventKind::Process,
                    ocsf::CLASS_PROCESS_ACTIVITY,
                    ocsf::process::FORK,
                    "fork",
                    &rec.h,
                    rec.child_pid,
                );
                ev.event.child_pid = Some(rec.child_pid);
                out.push(ev);
            }
            Record::Exit(rec) => {
                self.ensure(&rec.h);
                let status = rec.exit_code;
                let signal = (status & 0x7f) as i32;
                let mut ev = self.event(
                    EventKind::Process,
                    ocsf::CLASS_PROCESS_ACTIVITY,
                    ocsf::process::TERMINATE,
                    "terminate",
                    &rec.h,
                    rec.h.tgid,
                );
                ev.event.exit = Some(ExitStatus {
                    code: (signal == 0).then_some(((status >> 8) & 0xff) as i32),
                    signal: (signal != 0).then_some(signal),
                    status,
                });
                out.push(ev);
                self.table.remove(rec.h.tgid);
                self.open_fds.remove(&rec.h.tgid);
                self.invalidate();
            }
            Record::Chdir { rec, cwd } => {
                if let Some(p) = self.table.get_mut(rec.h.tgid) {
                    p.cwd = records::dpath(cwd);
                    self.invalidate();
                }
            }
            Record::FileOpen { rec, path } => {
                self.ensure(&rec.h);
                let path = self.resolve(rec.h.tgid, rec.dfd, path);
                if rec.ret >= 0 {
                    self.remember_fd(
                        rec.h.tgid,
                        rec.ret as i32,
                        rec.open_id,
                        Some(path.clone()),
                        false,
                    );
                }
                let mut ev = self.event(
                    EventKind::File,
                    ocsf::CLASS_FILE_SYSTEM_ACTIVITY,
                    ocsf::file::OPEN,
                    "open",
                    &rec.h,
                    rec.h.tgid,
                );
                ev.event.file = Some(FileActivity {
                    path,
                    fd: (rec.ret >= 0).then_some(rec.ret as i32),
                    flags: Some(rec.flags),
                    flags_names: Some(open_flags(rec.flags)),
                    result: Some(rec.ret),
                    error: errno_name(rec.ret),
                    ..Default::default()
                });
                out.push(ev);
            }
            Record::FileUnlink { rec, path } => {
                self.ensure(&rec.h);
                let path = self.resolve(rec.h.tgid, rec.dfd, path);
                let mut ev = self.event(
                    EventKind::File,
                    ocsf::CLASS_FILE_SYSTEM_ACTIVITY,
                    ocsf::file::DELETE,
                    "delete",
                    &rec.h,
                    rec.h.tgid,
                );
                ev.event.file = Some(FileActivity {
                    path,
                    result: Some(rec.ret),
                    error: errno_name(rec.ret),
                    ..Default::default()
                });
                out.push(ev);
            }
            Record::FileRename { rec, old, new } => {
                self.ensure(&rec.h);
                let path = self.resolve(rec.h.tgid, rec.old_dfd, old);
                let new_path = self.resolve(rec.h.tgid, rec.new_dfd, new);
                let mut ev = self.event(
                    EventKind::File,
                    ocsf::CLASS_FILE_SYSTEM_ACTIVITY,
                    ocsf::file::RENAME,
                    "rename",
                    &rec.h,
                    rec.h.tgid,
                );
                ev.event.file = Some(FileActivity {
                    path,
                    new_path: Some(new_path),
                    result: Some(rec.ret),
                    error: errno_name(rec.ret),
                    ..Default::default()
                });
                out.push(ev);
            }
            Record::Net(rec) => {
                self.ensure(&rec.h);
                const EINPROGRESS: i64 = -115;
                let ok = rec.ret >= 0 || rec.ret == EINPROGRESS;
                let (activity_id, name, inbound) = match rec.h.kind {
                    kind::NET_ACCEPT => (ocsf::network::OPEN, "accept", true),
                    kind::NET_LISTEN => (ocsf::network::LISTEN, "listen", true),
                    kind::NET_SEND => (ocsf::network::OPEN, "send", false),
                    _ if ok => (ocsf::network::OPEN, "connect", false),
                    _ => (ocsf::network::FAIL, "connect", false),
                };
                if ok {
                    self.remember_fd(rec.h.tgid, rec.fd, rec.open_id, None, inbound);
                }
                if ok && name == "connect" && rec.addr.protocol == 6 {
                    let (src, dst) = endpoints(&rec.addr);
                    self.connections.connected(src, dst, rec.h.tgid);
                }
                let mut ev = self.event(
                    EventKind::Network,
                    ocsf::CLASS_NETWORK_ACTIVITY,
                    activity_id,
                    name,
                    &rec.h,
                    rec.h.tgid,
                );
                let mut net = network(
                    &rec.addr,
                    inbound,
                    rec.fd,
                    &flow_id(&self.host.host_id, rec.h.tgid, rec.fd, rec.open_id),
                );
                net.result = Some(rec.ret);
                net.error = if ok { None } else { errno_name(rec.ret) };
                ev.event.network = Some(net);
                out.push(ev);
            }
            Record::FdDup(rec) => {
                let copy = self
                    .open_fds
                    .get(&rec.h.tgid)
                    .and_then(|m| m.get(&rec.oldfd))
                    .filter(|o| o.open_id == rec.open_id)
                    .cloned();
                if let Some(mut copy) = copy {
                    copy.reported_in = 0;
                    copy.reported_out = 0;
                    self.open_fds
                        .entry(rec.h.tgid)
                        .or_default()
                        .insert(rec.newfd, copy);
                }
            }
            Record::IoClose(rec) => self.close(rec, out),
        }
    }

    fn close(&mut self, rec: &IoClose, out: &mut Vec<Output>) {
        self.ensure(&rec.h);
        let tgid = rec.h.tgid;
        let s = &rec.stats;
        let known = self
            .open_fds
            .get_mut(&tgid)
            .and_then(|fds| fds.remove(&rec.fd))
            .filter(|o| o.open_id == s.open_id);
        let reason = match rec.reason {
            records::CLOSE_SYSCALL => "close",
            records::CLOSE_REPLACED => "replaced",
            records::CLOSE_EXIT => "exit",
            _ => "unknown",
        };
        if rec.h.kind == kind::NET_CLOSE {
            let mut ev = self.event(
                EventKind::Network,
                ocsf::CLASS_NETWORK_ACTIVITY,
                ocsf::network::CLOSE,
                "close",
                &rec.h,
                tgid,
            );
            let inbound = known.as_ref().is_some_and(|k| k.inbound);
            let mut net = network(
                &s.addr,
                inbound,
                rec.fd,
                &flow_id(&self.host.host_id, tgid, rec.fd, s.open_id),
            );
            net.bytes_in = Some(s.bytes_read);
            net.bytes_out = Some(s.bytes_written);
            net.packets_in = Some(s.reads);
            net.packets_out = Some(s.writes);
            net.close_reason = Some(reason.to_string());
            ev.event.network = Some(net);
            out.push(ev);
        } else {
            let mut ev = self.event(
                EventKind::File,
                ocsf::CLASS_FILE_SYSTEM_ACTIVITY,
                ocsf::file::CLOSE,
                "close",
                &rec.h,
                tgid,
            );
            ev.event.file = Some(FileActivity {
                path: known
                    .and_then(|k| k.path)
                    .unwrap_or_else(|| format!("fd:{}", rec.fd)),
                fd: Some(rec.fd),
                bytes_read: Some(s.bytes_read),
                bytes_written: Some(s.bytes_written),
                read_calls: Some(s.reads),
                write_calls: Some(s.writes),
                close_reason: Some(reason.to_string()),
                ..Default::default()
            });
            out.push(ev);
        }
    }

    /// Traffic of a long-lived flow since its last report; None when idle.
    pub fn flow_traffic(
        &mut self,
        tgid: u32,
        fd: i32,
        stats: &records::FdStats,
        now_ns: u64,
    ) -> Option<Output> {
        let open = self.open_fds.get_mut(&tgid)?.get_mut(&fd)?;
        if open.open_id != stats.open_id {
            return None;
        }
        let d_in = stats.bytes_read.saturating_sub(open.reported_in);
        let d_out = stats.bytes_written.saturating_sub(open.reported_out);
        if d_in == 0 && d_out == 0 {
            return None;
        }
        open.reported_in = stats.bytes_read;
        open.reported_out = stats.bytes_written;
        let inbound = open.inbound;
        let h = Header::synthetic(kind::NET_CLOSE, tgid, now_ns);
        let mut ev = self.event(
            EventKind::Network,
            ocsf::CLASS_NETWORK_ACTIVITY,
            ocsf::network::TRAFFIC,
            "traffic",
            &h,
            tgid,
        );
        let mut net = network(
            &stats.addr,
            inbound,
            fd,
            &flow_id(&self.host.host_id, tgid, fd, stats.open_id),
        );
        net.bytes_in = Some(d_in);
        net.bytes_out = Some(d_out);
        ev.event.network = Some(net);
        Some(ev)
    }

    /// The fds the collector knows to be open in a process (flushed at its exit).
    pub fn open_fds_of(&self, tgid: u32) -> Vec<i32> {
        self.open_fds
            .get(&tgid)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn is_known(&self, tgid: u32) -> bool {
        self.table.get(tgid).is_some()
    }

    /// Forget processes that are gone without an exit record (e.g. a dropped one).
    pub fn forget_dead(&mut self) -> usize {
        let n = self.table.retain_alive(procfs::is_alive);
        self.open_fds.retain(|tgid, _| procfs::is_alive(*tgid));
        self.contexts.clear();
        self.invalidate();
        n
    }

    fn remember_fd(
        &mut self,
        tgid: u32,
        fd: i32,
        open_id: u64,
        path: Option<String>,
        inbound: bool,
    ) {
        self.open_fds.entry(tgid).or_default().insert(
            fd,
            OpenFd {
                open_id,
                path,
                inbound,
                reported_in: 0,
                reported_out: 0,
            },
        );
    }

    /// An absolute path for a path argument relative to `dfd`.
    fn resolve(&self, tgid: u32, dfd: i32, raw: &[u8]) -> String {
        let p = String::from_utf8_lossy(raw);
        if p.starts_with('/') {
            return p.into_owned();
        }
        let base = if dfd == AT_FDCWD {
            self.table
                .get(tgid)
                .map(|e| e.cwd.clone())
                .filter(|c| !c.is_empty())
        } else {
            self.open_fds
                .get(&tgid)
                .and_then(|m| m.get(&dfd))
                .and_then(|o| o.path.clone())
        };
        match base {
            Some(base) => join(&base, &p),
            None if dfd == AT_FDCWD => p.into_owned(),
            None => format!("fd:{dfd}/{p}"),
        }
    }
}

/// Join a relative path onto a base, folding `.` and `..` lexically.
fn join(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn flow_id(host: &str, tgid: u32, fd: i32, open_id: u64) -> String {
    format!("{host}:{tgid}:{fd}:{open_id}")
}

fn ip(addr: &[u8; 16], family: u16) -> IpAddr {
    const AF_INET6: u16 = 10;
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    }
}

/// The local and remote ends of a socket, IPv4-mapped addresses as IPv4.
fn endpoints(a: &SockAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |ip: IpAddr, port| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        SocketAddr::new(ip, port)
    };
    (
        canonical(ip(&a.saddr, a.family), a.sport),
        canonical(ip(&a.daddr, a.family), a.dport),
    )
}

fn network(a: &SockAddr, inbound: bool, fd: i32, flow_id: &str) -> NetworkActivity {
    let local = Endpoint {
        ip: ip(&a.saddr, a.family).to_string(),
        port: a.sport,
    };
    let remote = Endpoint {
        ip: ip(&a.daddr, a.family).to_string(),
        port: a.dport,
    };
    let (src, dst) = if inbound {
        (remote, local)
    } else {
        (local, remote)
    };
    NetworkActivity {
        protocol: match a.protocol {
            6 => "tcp".into(),
            17 => "udp".into(),
            p => format!("ip-proto-{p}"),
        },
        ip_version: if a.family == 10 {
            "ipv6".into()
        } else {
            "ipv4".into()
        },
        direction: if inbound {
            "inbound".into()
        } else {
            "outbound".into()
        },
        src_endpoint: src,
        dst_endpoint: dst,
        fd,
        flow_id: flow_id.to_string(),
        ..Default::default()
    }
}

fn errno_name(ret: i64) -> Option<String> {
    if ret >= 0 {
        return None;
    }
    let errno = nix::errno::Errno::from_raw((-ret) as i32);
    Some(format!("{errno:?}"))
}

/// open(2) flags as `O_WRONLY|O_CREAT|…`.
fn open_flags(flags: u32) -> String {
    let mut names = vec![match flags & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        _ => "O_RDWR",
    }];
    const BITS: &[(u32, &str)] = &[
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o200000, "O_DIRECTORY"),
        (0o400000, "O_NOFOLLOW"),
        (0o2000000, "O_CLOEXEC"),
        (0o20000000, "O_PATH"),
        (0o20200000, "O_TMPFILE"),
    ];
    for (bit, name) in BITS {
        if flags & bit == *bit {
            names.push(name);
        }
    }
    names.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, tgid: u32) -> Header {
        Header::synthetic(kind, tgid, 1_000_000)
    }

    fn open_record(tgid: u32) -> records::FileOpen {
        records::FileOpen {
            h: header(kind::FILE_OPEN, tgid),
            ret: -2,
            open_id: 1,
            flags: 0,
            mode: 0,
            dfd: AT_FDCWD,
            path_len: 1,
            _pad: 0,
        }
    }

    fn enricher() -> Enricher {
        let host = Host {
            host_id: "h".into(),
            hostname: "n".into(),
        };
        let table = ProcessTable::new("h".into(), 4, agents::AgentMatcher::default());
        Enricher::new(host, table, Redactor::new(&[], &[]).unwrap())
    }

    fn context_of(out: &Output) -> serde_json::Value {
        serde_json::from_str(&format!(
            "{{{}}}",
            out.context.as_ref().unwrap().json_members()
        ))
        .unwrap()
    }

    #[test]
    fn rendered_context_follows_exec_and_chdir() {
        let mut e = enricher();
        let pid = 4_000_000; // no such process: everything comes from records
        let exec = records::Exec {
            h: header(kind::EXEC, pid),
            start_boottime_ns: 5,
            ppid: 0,
            uid: 0,
            gid: 0,
            flags: 0,
            exe_len: 0,
            cwd_len: 0,
            args_len: 0,
            _pad: 0,
        };
        let mut out = Vec::new();
        e.handle(
            &Record::Exec {
                rec: exec,
                exe: b"sh\0bin\0",
                cwd: b"tmp\0",
                args: b"sh\0-c\0",
            },
            &mut out,
        );
        e.handle(
            &Record::FileOpen {
                rec: open_record(pid),
                path: b"a",
            },
            &mut out,
        );
        assert_eq!(context_of(&out[1])["process"]["cwd"], "/tmp");
        assert_eq!(out[1].event.file.as_ref().unwrap().path, "/tmp/a");
        let chdir = records::Chdir {
            h: header(kind::CHDIR, pid),
            flags: 0,
            cwd_len: 0,
            _pad: 0,
        };
        e.handle(
            &Record::Chdir {
                rec: chdir,
                cwd: b"v\0var\0",
            },
            &mut out,
        );
        e.handle(
            &Record::FileOpen {
                rec: open_record(pid),
                path: b"a",
            },
            &mut out,
        );
        assert_eq!(context_of(&out[2])["process"]["cwd"], "/var/v");
        assert_eq!(out[2].event.file.as_ref().unwrap().path, "/var/v/a");
        assert_eq!(
            context_of(&out[2])["process"]["args"],
            serde_json::json!(["sh", "-c"])
        );
    }

    #[test]
    fn joins_relative_paths() {
        assert_eq!(join("/home/u", "a.txt"), "/home/u/a.txt");
        assert_eq!(join("/home/u", "../v/./b"), "/home/v/b");
        assert_eq!(join("/", ".."), "/");
    }

    #[test]
    fn names_flags_and_errors() {
        assert_eq!(open_flags(0o1101), "O_WRONLY|O_CREAT|O_TRUNC");
        assert_eq!(errno_name(-2).as_deref(), Some("ENOENT"));
        assert_eq!(errno_name(3), None);
    }
}
