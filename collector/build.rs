//! Builds the BPF object the collector embeds, and the layout probe that
//! checks the Rust mirror of `ebpf/vigil.h`.
//!
//! 1. `vmlinux.h` is generated from the running kernel's BTF with bpftool
//!    (CO-RE: the object then loads on other kernels with BTF).
//! 2. `ebpf/vigil.bpf.c` is compiled with clang `-O2 -g -target bpf`.
//! 3. A host C program prints `sizeof`/`offsetof` of every record in
//!    `vigil.h` as Rust constants for `source::records` tests.
//!
//! Tools: `CLANG` (default `clang-19`, then `clang`), `BPFTOOL` (default
//! `bpftool`), `VIGIL_BTF` (default `/sys/kernel/btf/vmlinux`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest.join("../ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for f in ["vigil.bpf.c", "vigil.h"] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(f).display());
    }
    for v in ["CLANG", "BPFTOOL", "VIGIL_BTF"] {
        println!("cargo:rerun-if-env-changed={v}");
    }

    let clang = env::var("CLANG").unwrap_or_else(|_| find_tool(&["clang-19", "clang"]));
    let bpftool = env::var("BPFTOOL").unwrap_or_else(|_| find_tool(&["bpftool"]));
    let btf = env::var("VIGIL_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());

    let vmlinux = out.join("vmlinux.h");
    let dump = Command::new(&bpftool)
        .args(["btf", "dump", "file", &btf, "format", "c"])
        .output()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot run {bpftool} (install bpftool: scripts/setup): {e}"
            ))
        });
    if !dump.status.success() {
        fail(&format!(
            "bpftool could not dump kernel BTF from {btf}: {}\n(the kernel needs CONFIG_DEBUG_INFO_BTF)",
            String::from_utf8_lossy(&dump.stderr)
        ));
    }
    std::fs::write(&vmlinux, dump.stdout).unwrap();

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").unwrap().as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => fail(&format!("unsupported target arch for BPF: {other}")),
    };
    let object = out.join("vigil.bpf.o");
    run(Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg(format!("-I{}", out.display()))
        .arg(format!("-I{}", ebpf_dir.display()))
        .arg("-c")
        .arg(ebpf_dir.join("vigil.bpf.c"))
        .arg("-o")
        .arg(&object));

    layout_probe(&clang, &ebpf_dir, &out);
}

/// Compile and run a host program that prints the record layout of vigil.h.
fn layout_probe(clang: &str, ebpf_dir: &Path, out: &Path) {
    let records: &[(&str, &[&str])] = &[
        (
            "vigil_header",
            &[
                "ts_ns",
                "cgroup_id",
                "kind",
                "tgid",
                "tid",
                "data_len",
                "comm",
            ],
        ),
        (
            "vigil_exec",
            &[
                "start_boottime_ns",
                "ppid",
                "uid",
                "gid",
                "flags",
                "exe_len",
                "cwd_len",
                "args_len",
            ],
        ),
        ("vigil_fork", &["child_pid"]),
        ("vigil_exit", &["exit_code"]),
        ("vigil_chdir", &["flags", "cwd_len"]),
        (
            "vigil_file_open",
            &["ret", "open_id", "flags", "mode", "dfd", "path_len"],
        ),
        ("vigil_file_unlink", &["ret", "dfd", "flags", "path_len"]),
        ("vigil_fd_dup", &["oldfd", "newfd", "open_id"]),
        (
            "vigil_file_rename",
            &["ret", "old_dfd", "new_dfd", "flags", "old_len", "new_len"],
        ),
        (
            "vigil_sockaddr",
            &["saddr", "daddr", "family", "protocol", "sport", "dport"],
        ),
        ("vigil_net", &["ret", "open_id", "fd", "addr"]),
        ("vigil_fd_key", &["tgid", "fd"]),
        (
            "vigil_fd_stats",
            &[
                "open_id",
                "bytes_read",
                "bytes_written",
                "reads",
                "writes",
                "type",
                "addr",
            ],
        ),
        ("vigil_io_close", &["fd", "reason", "stats"]),
    ];
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"vigil.h\"\nint main(void) {\n",
    );
    for (name, fields) in records {
        let upper = name.to_uppercase();
        c.push_str(&format!(
            "printf(\"pub const {upper}_SIZE: usize = %zu;\\n\", sizeof(struct {name}));\n"
        ));
        for f in *fields {
            let fu = f.to_uppercase();
            c.push_str(&format!(
                "printf(\"pub const {upper}_{fu}: usize = %zu;\\n\", offsetof(struct {name}, {f}));\n"
            ));
        }
    }
    // the argument buffer's size: /proc command lines are cut to it too
    c.push_str("printf(\"pub const VIGIL_ARGS_LEN: usize = %d;\\n\", VIGIL_ARGS_LEN);\n");
    c.push_str("return 0; }\n");
    let src = out.join("layout_probe.c");
    let bin = out.join("layout_probe");
    std::fs::write(&src, c).unwrap();
    run(Command::new(clang)
        .arg(format!("-I{}", ebpf_dir.display()))
        .arg(&src)
        .arg("-o")
        .arg(&bin));
    let printed = Command::new(&bin).output().expect("run layout probe");
    std::fs::write(out.join("layout.rs"), printed.stdout).unwrap();
}

fn find_tool(candidates: &[&str]) -> String {
    for c in candidates {
        if Command::new(c).arg("--version").output().is_ok() {
            return (*c).to_string();
        }
    }
    fail(&format!(
        "none of {candidates:?} found on PATH: run scripts/setup"
    ))
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {cmd:?}: {e}")));
    if !status.success() {
        fail(&format!("{cmd:?} failed with {status}"));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("vigil-collector build: {msg}");
    std::process::exit(1);
}
