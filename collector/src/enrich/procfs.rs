//! Reading /proc, /sys/fs/cgroup and the user database: the facts the
//! kernel records do not carry, and the seed of the process table.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::process_table::{ProcEntry, Source};
use super::redact::Redactor;

/// /proc reports start times in clock ticks (USER_HZ, 100 on Linux).
pub const NS_PER_TICK: u64 = 10_000_000;

/// A process's command line as BPF would have copied it: at most
/// [`ARGS_LEN`](crate::source::records::ARGS_LEN) bytes (a process can make
/// its own megabytes long), and whether it was cut.
fn read_cmdline(path: &Path) -> (Vec<u8>, bool) {
    use std::io::Read;
    let max = crate::source::records::ARGS_LEN;
    let mut raw = Vec::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(max as u64 + 1).read_to_end(&mut raw);
    }
    let cut = raw.len() > max;
    raw.truncate(max);
    (raw, cut)
}

/// Read one process from /proc; None when it is gone or is a kernel thread.
pub fn read_process(proc_root: &Path, pid: u32, redactor: &Redactor) -> Option<ProcEntry> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    // comm may contain spaces and parentheses: split at the last ')'
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // fields[0] is state (field 3); ppid is field 4, flags 9, starttime 22
    let ppid: u32 = fields.get(1)?.parse().ok()?;
    let flags: u64 = fields.get(6)?.parse().ok()?;
    const PF_KTHREAD: u64 = 0x0020_0000;
    if flags & PF_KTHREAD != 0 {
        return None;
    }
    let start_ticks: u64 = fields.get(19)?.parse().ok()?;

    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let id_field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1)) // effective id
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX)
    };
    let uid = id_field("Uid:");
    let gid = id_field("Gid:");

    let (raw_args, args_cut) = read_cmdline(&dir.join("cmdline"));
    let mut args = crate::source::records::argv(&raw_args);
    redactor.redact_args(&mut args);
    let exe = fs::read_link(dir.join("exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_default();
    let cwd = fs::read_link(dir.join("cwd"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .unwrap_or_default();

    Some(ProcEntry {
        pid,
        ppid,
        start_boottime_ns: start_ticks * NS_PER_TICK,
        uid_exec: String::new(),
        cmd_line: args.join(" "),
        args,
        exe,
        cwd,
        comm,
        uid,
        gid,
        user: String::new(),
        cgroup_id: 0,
        cgroup,
        source: Source::Procfs,
        truncated: args_cut,
        agent: None,
        parent_exe: String::new(),
        parent_uid_exec: String::new(),
    })
}

/// Every process in /proc (kernel threads excluded).
pub fn scan(proc_root: &Path, redactor: &Redactor) -> Vec<ProcEntry> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    dir.filter_map(|d| d.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_process(proc_root, pid, redactor))
        .collect()
}

pub fn is_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// cgroup v2 id → path. The id of a cgroup is the inode number of its
/// directory under /sys/fs/cgroup; unknown ids trigger a rescan, at most
/// once a second.
pub struct CgroupPaths {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            by_id: HashMap::new(),
            last_scan: None,
        }
    }

    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.by_id.contains_key(&id)
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.rescan();
        }
        self.by_id.get(&id).map(String::as_str)
    }

    /// The id of a cgroup path, e.g. for entries seeded from /proc.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(self.root.join(path.trim_start_matches('/')))
            .ok()
            .map(|m| m.ino())
    }

    fn rescan(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.last_scan = Some(Instant::now());
        self.by_id.clear();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(meta) = fs::metadata(&dir) {
                let rel = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
                self.by_id.insert(meta.ino(), format!("/{}", rel.display()));
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }
}

/// uid → user name, cached.
#[derive(Default)]
pub struct Users {
    names: HashMap<u32, String>,
}

impl Users {
    pub fn name(&mut self, uid: u32) -> &str {
        self.names.entry(uid).or_insert_with(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| uid.to_string())
        })
    }
}

/// Wall-clock time of boot in ms: converts the kernel's boot-time clock.
pub fn boot_wall_ms() -> i64 {
    let real =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).expect("realtime clock");
    let boot =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("boottime clock");
    let ms = |t: nix::sys::time::TimeSpec| t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000;
    ms(real) - ms(boot)
}

/// Kernel boot-time clock now, in ns (the clock of BPF timestamps).
pub fn boot_now_ns() -> u64 {
    let boot =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("boottime clock");
    boot.tv_sec() as u64 * 1_000_000_000 + boot.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let r = Redactor::new(&[], &[]).unwrap();
        let me = read_process(Path::new("/proc"), std::process::id(), &r).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap().to_string_lossy());
        assert_eq!(me.cwd, std::env::current_dir().unwrap().to_string_lossy());
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(me.start_boottime_ns > 0 && me.start_boottime_ns <= boot_now_ns());
    }

    #[test]
    fn a_huge_command_line_is_cut_like_bpf_and_marked() {
        // a process whose argv is 512 KiB: read at most ARGS_LEN of it
        let long = "a".repeat(64 << 10);
        // (sh ignores its extra arguments; `; :` keeps it from exec'ing sleep)
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; :", "sh"])
            .args(std::iter::repeat_n(&long, 8))
            .spawn()
            .unwrap();
        let r = Redactor::new(&[], &[]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let entry = loop {
            // until the child has exec'd sh (before, it is a copy of us)
            let e = read_process(Path::new("/proc"), child.id(), &r);
            if e.as_ref().is_none_or(|e| e.comm == "sh") || Instant::now() > deadline {
                break e;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = child.kill();
        let _ = child.wait();
        let entry = entry.expect("the child in /proc");
        assert!(
            entry.truncated,
            "comm {} args {}",
            entry.comm,
            entry.args.len()
        );
        assert_eq!(entry.args[..3], ["sh", "-c", "sleep 30; :"]);
        let copied: usize = entry.args.iter().map(|a| a.len() + 1).sum();
        assert!(copied <= crate::source::records::ARGS_LEN + 1, "{copied}");
        // a short one is whole and not marked
        let me = read_process(Path::new("/proc"), std::process::id(), &r).unwrap();
        assert!(!me.truncated);
    }

    #[test]
    fn kernel_threads_are_skipped() {
        let r = Redactor::new(&[], &[]).unwrap();
        // kthreadd is pid 2 on every Linux system
        assert!(read_process(Path::new("/proc"), 2, &r).is_none());
    }
}
