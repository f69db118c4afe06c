//! Loading and attaching the BPF programs: the sole owner of the `Ebpf` handle.
//!
//! The sequence follows aya's examples: prerequisites (tracefs, bpffs, BTF,
//! capabilities), load the embedded object with the configured map sizes and
//! our own tgid, attach every program to its tracepoint, take the maps.
//! Dropping [`BpfSource`] detaches everything.

use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::records::{self, FdKey, FdStats};
use crate::config::BpfConfig;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vigil.bpf.o"));

/// Tracepoints a kernel may lack (architecture or version); all others are required.
const OPTIONAL: &[&str] = &[
    "sys_exit_open",
    "sys_exit_openat2",
    "sys_exit_unlink",
    "sys_exit_rename",
    "sys_exit_renameat",
];

#[derive(Debug, Error)]
pub enum BpfError {
    #[error(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: the kernel needs CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error("cannot mount {what} at {path} ({source}); mount it or run with CAP_SYS_ADMIN")]
    Mount {
        what: &'static str,
        path: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error(
        "missing capabilities to load BPF: need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); \
         run as root or from the systemd unit in scripts/"
    )]
    Capability,
    #[error("cannot load the BPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("BPF program {program} was rejected by the kernel: {source}")]
    Program {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("cannot attach {program} to tracepoint {category}:{name}: {source}")]
    Attach {
        program: String,
        category: String,
        name: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "tracepoint {category}:{name} does not exist on this kernel (needs CONFIG_FTRACE_SYSCALLS)"
    )]
    MissingTracepoint { category: String, name: String },
    #[error("BPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The loaded programs and the maps user space reads.
pub struct BpfSource {
    // Kept alive: dropping it detaches every program.
    _ebpf: Ebpf,
    drops: PerCpuArray<MapData, u64>,
    fds: BpfHashMap<MapData, FdKey, FdStats>,
    pub attached: usize,
}

/// Which tracepoint a program (named after its C function) belongs to.
fn tracepoint_of(program: &str) -> (&'static str, &str) {
    if program.starts_with("sys_enter_") || program.starts_with("sys_exit_") {
        ("syscalls", program)
    } else {
        ("sched", program)
    }
}

/// Mount tracefs and bpffs when absent: minimal hosts and fresh VMs lack them.
pub fn ensure_mounts() -> Result<(), BpfError> {
    use nix::mount::{mount, MsFlags};
    let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let have = |fstype: &str, path: &str| {
        mounted.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == path && f[2] == fstype
        })
    };
    if !have("tracefs", "/sys/kernel/tracing") && !Path::new("/sys/kernel/tracing/events").exists()
    {
        info!("mounting tracefs at /sys/kernel/tracing");
        mount(
            Some("tracefs"),
            "/sys/kernel/tracing",
            Some("tracefs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| BpfError::Mount {
            what: "tracefs",
            path: "/sys/kernel/tracing",
            source,
        })?;
    }
    if !have("bpf", "/sys/fs/bpf") {
        info!("mounting bpffs at /sys/fs/bpf");
        if let Err(e) = mount(
            Some("bpf"),
            "/sys/fs/bpf",
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        ) {
            // bpffs is only needed for pinning, which the collector does not do yet.
            warn!(error = %e, "cannot mount bpffs at /sys/fs/bpf; continuing without it");
        }
    }
    Ok(())
}

/// True when the process has what loading BPF tracepoint programs needs.
fn has_bpf_capabilities() -> bool {
    // CapEff bits: CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let bit = |n: u32| eff & (1u64 << n) != 0;
    bit(21) || (bit(38) && bit(39))
}

impl BpfSource {
    /// Load and attach; the ring buffer is returned apart so the reader can own it.
    pub fn load(config: &BpfConfig) -> Result<(BpfSource, RingBuf<MapData>), BpfError> {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(BpfError::NoBtf);
        }
        if !has_bpf_capabilities() {
            return Err(BpfError::Capability);
        }
        ensure_mounts()?;

        let self_tgid = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global("self_tgid", &self_tgid, true)
            .map_max_entries("events", config.ring_buffer_bytes)
            .map_max_entries("fds", config.fd_table_entries)
            .load(OBJECT)
            .map_err(|e| BpfError::Load(Box::new(e)))?;

        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        let mut attached = 0;
        for name in names {
            let (category, tp) = tracepoint_of(&name);
            let tp = tp.to_string();
            if !Path::new("/sys/kernel/tracing/events")
                .join(category)
                .join(&tp)
                .exists()
            {
                if OPTIONAL.contains(&name.as_str()) {
                    debug!(program = %name, "tracepoint not on this kernel; skipped");
                    continue;
                }
                return Err(BpfError::MissingTracepoint {
                    category: category.into(),
                    name: tp,
                });
            }
            let program: &mut TracePoint = ebpf
                .program_mut(&name)
                .expect("listed above")
                .try_into()
                .map_err(|source| BpfError::Program {
                    program: name.clone(),
                    source: Box::new(source),
                })?;
            program.load().map_err(|source| BpfError::Program {
                program: name.clone(),
                source: Box::new(source),
            })?;
            program
                .attach(category, &tp)
                .map_err(|source| BpfError::Attach {
                    program: name.clone(),
                    category: category.into(),
                    name: tp.clone(),
                    source: Box::new(source),
                })?;
            attached += 1;
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(BpfError::MissingMap(name))
        };
        let ring =
            RingBuf::try_from(take(&mut ebpf, "events")?).map_err(|source| BpfError::Map {
                name: "events",
                source,
            })?;
        let drops =
            PerCpuArray::try_from(take(&mut ebpf, "drops")?).map_err(|source| BpfError::Map {
                name: "drops",
                source,
            })?;
        let fds =
            BpfHashMap::try_from(take(&mut ebpf, "fds")?).map_err(|source| BpfError::Map {
                name: "fds",
                source,
            })?;
        info!(
            programs = attached,
            ring_buffer_bytes = config.ring_buffer_bytes,
            "BPF programs attached"
        );
        Ok((
            BpfSource {
                _ebpf: ebpf,
                drops,
                fds,
                attached,
            },
            ring,
        ))
    }

    /// Kernel-side drop counters summed over CPUs, by record kind name.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        for slot in 0..records::kind::MAX {
            let Some(name) = records::kind::name(slot) else {
                continue;
            };
            if let Ok(values) = self.drops.get(&slot, 0) {
                out.push((name, values.iter().sum()));
            }
        }
        out
    }

    /// Every tracked (tgid, fd) with its current totals.
    pub fn tracked_fds(&self) -> Vec<(FdKey, FdStats)> {
        self.fds.iter().filter_map(Result::ok).collect()
    }

    pub fn fd_stats(&self, key: &FdKey) -> Option<FdStats> {
        self.fds.get(key, 0).ok()
    }

    pub fn forget_fd(&mut self, key: &FdKey) {
        let _ = self.fds.remove(key);
    }
}
