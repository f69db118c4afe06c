//! The process table: what the collector knows about every live process.
//!
//! Seeded from /proc at start-up (so processes older than the collector are
//! enriched too), then kept by exec, fork and exit records. Each entry carries
//! its agent tag: set when an exec matches an `[[agents]]` rule, inherited by
//! every child at fork and kept across exec and re-parenting, because it is
//! stored on the process itself rather than derived from the live parent.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;
use vigil_schema::{Process, ProcessRef};

use super::agents::{AgentMatcher, Candidate};
use super::procfs;

/// The desktop agent a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTag {
    pub agent_id: String,
    pub session: String,
}

/// Where an entry's details came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Exec,
    Fork,
    Procfs,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Exec => "exec",
            Source::Fork => "fork",
            Source::Procfs => "procfs",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    /// task->start_boottime in ns (exec, procfs at tick precision) or the fork time.
    pub start_boottime_ns: u64,
    pub uid_exec: String,
    pub exe: String,
    pub args: Vec<String>,
    pub cmd_line: String,
    pub cwd: String,
    pub comm: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub cgroup_id: u64,
    pub cgroup: String,
    pub source: Source,
    pub truncated: bool,
    pub agent: Option<Arc<AgentTag>>,
    /// Parent as last seen, for events after the parent is gone.
    pub parent_exe: String,
    pub parent_uid_exec: String,
}

/// Id stable across pid reuse: host, pid and start time in clock ticks (the
/// precision /proc offers, so seeded and exec'd entries agree).
pub fn exec_id(host_id: &str, pid: u32, start_boottime_ns: u64) -> String {
    let ticks = start_boottime_ns / procfs::NS_PER_TICK;
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{host_id}:{pid}:{ticks}").as_bytes(),
    )
    .to_string()
}

pub struct ProcessTable {
    host_id: String,
    max_ancestors: usize,
    procs: HashMap<u32, ProcEntry>,
    agents: AgentMatcher,
}

impl ProcessTable {
    pub fn new(host_id: String, max_ancestors: usize, agents: AgentMatcher) -> Self {
        Self {
            host_id,
            max_ancestors,
            procs: HashMap::new(),
            agents,
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&ProcEntry> {
        self.procs.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut ProcEntry> {
        self.procs.get_mut(&pid)
    }

    /// Add entries read from /proc, parents before children, and tag agent trees.
    pub fn seed(&mut self, mut entries: Vec<ProcEntry>) {
        entries.sort_by_key(|e| (e.start_boottime_ns, e.pid));
        for mut e in entries {
            e.uid_exec = exec_id(&self.host_id, e.pid, e.start_boottime_ns);
            e.agent = self.match_or_inherit(&e);
            if let Some(parent) = self.procs.get(&e.ppid) {
                e.parent_exe = parent.exe.clone();
                e.parent_uid_exec = parent.uid_exec.clone();
            }
            self.procs.insert(e.pid, e);
        }
    }

    fn match_or_inherit(&self, e: &ProcEntry) -> Option<Arc<AgentTag>> {
        if let Some(tag) = &e.agent {
            return Some(tag.clone());
        }
        let candidate = Candidate {
            exe: &e.exe,
            comm: &e.comm,
            cmd_line: &e.cmd_line,
            cgroup: &e.cgroup,
        };
        if let Some(name) = self.agents.match_agent(&candidate) {
            return Some(Arc::new(AgentTag {
                agent_id: name.to_string(),
                session: exec_id(&self.host_id, e.pid, e.start_boottime_ns),
            }));
        }
        self.procs.get(&e.ppid).and_then(|p| p.agent.clone())
    }

    /// A process exec'd: replace its image, keep (or start) its agent session.
    pub fn exec(&mut self, mut e: ProcEntry) -> &ProcEntry {
        let previous = self.procs.remove(&e.pid);
        e.uid_exec = exec_id(&self.host_id, e.pid, e.start_boottime_ns);
        // A process already in an agent tree stays in it through (re-)exec.
        e.agent = previous.as_ref().and_then(|p| p.agent.clone());
        e.agent = self.match_or_inherit(&e);
        match self.procs.get(&e.ppid) {
            Some(parent) => {
                e.parent_exe = parent.exe.clone();
                e.parent_uid_exec = parent.uid_exec.clone();
            }
            None => {
                if let Some(p) = &previous {
                    if p.ppid == e.ppid {
                        e.parent_exe = p.parent_exe.clone();
                        e.parent_uid_exec = p.parent_uid_exec.clone();
                    }
                }
            }
        }
        let pid = e.pid;
        self.procs.insert(pid, e);
        &self.procs[&pid]
    }

    /// A process forked: the child starts as a copy of the parent.
    pub fn fork(&mut self, parent_pid: u32, child_pid: u32, ts_ns: u64) -> Option<&ProcEntry> {
        let parent = self.procs.get(&parent_pid)?;
        let mut child = parent.clone();
        child.pid = child_pid;
        child.ppid = parent_pid;
        child.start_boottime_ns = ts_ns;
        child.uid_exec = exec_id(&self.host_id, child_pid, ts_ns);
        child.source = Source::Fork;
        child.parent_exe = parent.exe.clone();
        child.parent_uid_exec = parent.uid_exec.clone();
        self.procs.insert(child_pid, child);
        self.procs.get(&child_pid)
    }

    pub fn remove(&mut self, pid: u32) -> Option<ProcEntry> {
        self.procs.remove(&pid)
    }

    /// Drop entries whose process is gone (missed exit records), judged by `alive`.
    pub fn retain_alive(&mut self, alive: impl Fn(u32) -> bool) -> usize {
        let before = self.procs.len();
        self.procs.retain(|pid, _| alive(*pid));
        before - self.procs.len()
    }

    /// The schema's view of a process, its parent and its ancestors.
    pub fn describe(&self, e: &ProcEntry, tid: u32, boot_wall_ms: i64) -> Described {
        let process = Process {
            pid: e.pid,
            tid,
            uid_exec: e.uid_exec.clone(),
            comm: e.comm.clone(),
            exe: e.exe.clone(),
            args: e.args.clone(),
            cmd_line: e.cmd_line.clone(),
            cwd: e.cwd.clone(),
            user_id: e.uid,
            group_id: e.gid,
            user: e.user.clone(),
            start_time: boot_wall_ms + (e.start_boottime_ns / 1_000_000) as i64,
            cgroup_id: e.cgroup_id,
            cgroup: e.cgroup.clone(),
            source: e.source.as_str().to_string(),
            truncated: e.truncated,
        };
        let parent = if e.ppid == 0 {
            None
        } else {
            Some(match self.procs.get(&e.ppid) {
                Some(p) => ProcessRef {
                    pid: p.pid,
                    exe: p.exe.clone(),
                    uid_exec: p.uid_exec.clone(),
                },
                None => ProcessRef {
                    pid: e.ppid,
                    exe: e.parent_exe.clone(),
                    uid_exec: e.parent_uid_exec.clone(),
                },
            })
        };
        let mut ancestors = Vec::new();
        let mut next = self.procs.get(&e.ppid).map(|p| p.ppid);
        while let Some(pid) = next {
            if ancestors.len() >= self.max_ancestors || pid == 0 {
                break;
            }
            match self.procs.get(&pid) {
                Some(a) => {
                    ancestors.push(ProcessRef {
                        pid,
                        exe: a.exe.clone(),
                        uid_exec: a.uid_exec.clone(),
                    });
                    next = if a.ppid == pid { None } else { Some(a.ppid) };
                }
                None => break,
            }
        }
        Described {
            process,
            parent,
            ancestors,
            agent: e.agent.clone(),
        }
    }
}

pub struct Described {
    pub process: Process,
    pub parent: Option<ProcessRef>,
    pub ancestors: Vec<ProcessRef>,
    pub agent: Option<Arc<AgentTag>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    fn entry(pid: u32, ppid: u32, exe: &str) -> ProcEntry {
        ProcEntry {
            pid,
            ppid,
            start_boottime_ns: pid as u64 * 1_000_000_000,
            uid_exec: String::new(),
            exe: exe.into(),
            args: vec![exe.into()],
            cmd_line: exe.into(),
            cwd: "/".into(),
            comm: exe.rsplit('/').next().unwrap().into(),
            uid: 0,
            gid: 0,
            user: "root".into(),
            cgroup_id: 1,
            cgroup: "/".into(),
            source: Source::Exec,
            truncated: false,
            agent: None,
            parent_exe: String::new(),
            parent_uid_exec: String::new(),
        }
    }

    fn table() -> ProcessTable {
        let agents = AgentMatcher::new(&[AgentConfig {
            name: "cowork".into(),
            exe: Some("/opt/cowork/*".into()),
            comm: None,
            cmdline: None,
            cgroup: None,
        }])
        .unwrap();
        ProcessTable::new("host".into(), 4, agents)
    }

    #[test]
    fn session_follows_fork_exec_and_reparenting() {
        let mut t = table();
        t.seed(vec![entry(1, 0, "/sbin/init"), entry(10, 1, "/bin/bash")]);
        assert!(t.get(10).unwrap().agent.is_none());
        t.fork(10, 20, 5);
        let agent = t
            .exec(entry(20, 10, "/opt/cowork/agent"))
            .agent
            .clone()
            .unwrap();
        assert_eq!(agent.agent_id, "cowork");
        assert_eq!(agent.session, exec_id("host", 20, 20_000_000_000));
        t.fork(20, 30, 6);
        t.exec(entry(30, 20, "/bin/sh"));
        t.fork(30, 40, 7);
        // parent exits: the orphan is re-parented to init but keeps its session
        t.remove(30);
        let orphan = t.exec(entry(40, 1, "/usr/bin/curl"));
        assert_eq!(orphan.agent.as_deref(), Some(&*agent));
        // a re-exec of the agent itself keeps the same session
        assert_eq!(
            t.exec(entry(20, 10, "/opt/cowork/agent")).agent.as_deref(),
            Some(&*agent)
        );
        // an unrelated process carries none
        t.fork(10, 50, 8);
        assert!(t.exec(entry(50, 10, "/bin/ls")).agent.is_none());
    }

    #[test]
    fn seeded_agent_tree_is_tagged() {
        let mut t = table();
        t.seed(vec![
            entry(5, 1, "/usr/bin/python3"),
            entry(3, 1, "/opt/cowork/agent"),
            entry(4, 3, "/bin/sh"),
        ]);
        assert_eq!(t.get(4).unwrap().agent.as_ref().unwrap().agent_id, "cowork");
        assert!(t.get(5).unwrap().agent.is_none());
    }

    #[test]
    fn ancestors_are_bounded_and_parent_survives_its_exit() {
        let mut t = table();
        let mut chain = vec![entry(1, 0, "/sbin/init")];
        for pid in 2..10 {
            chain.push(entry(pid, pid - 1, &format!("/bin/p{pid}")));
        }
        t.seed(chain);
        let d = t.describe(t.get(9).unwrap(), 9, 0);
        assert_eq!(d.parent.unwrap().exe, "/bin/p8");
        assert_eq!(
            d.ancestors.iter().map(|a| a.pid).collect::<Vec<_>>(),
            [7, 6, 5, 4]
        );
        t.remove(8);
        let d = t.describe(t.get(9).unwrap(), 9, 0);
        assert_eq!(d.parent.unwrap().exe, "/bin/p8");
    }
}
