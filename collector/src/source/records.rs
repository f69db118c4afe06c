//! Rust mirror of `ebpf/vigil.h` and decoding of ring-buffer records.
//!
//! The structs are `#[repr(C)]` copies of the C records; the tests compare
//! every size and offset with what the C compiler produced for the same
//! header (see build.rs). Records are read with `read_unaligned` because the
//! ring buffer only guarantees 8-byte alignment of each record.

use std::mem::size_of;

use thiserror::Error;

pub const COMM_LEN: usize = 16;
/// Bytes of argv the BPF program copies (`VIGIL_ARGS_LEN`); command lines
/// read from /proc are cut to the same.
pub const ARGS_LEN: usize = 4096;
/// VIGIL_INHERIT_FDS: the kernel copies (at fork) and flushes (at exit) fds below this.
pub const INHERIT_FDS: i32 = 32;

pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FORK: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const CHDIR: u32 = 4;
    pub const FILE_OPEN: u32 = 10;
    pub const FILE_CLOSE: u32 = 11;
    pub const FILE_UNLINK: u32 = 12;
    pub const FILE_RENAME: u32 = 13;
    pub const FD_DUP: u32 = 14;
    pub const NET_CONNECT: u32 = 20;
    pub const NET_ACCEPT: u32 = 21;
    pub const NET_LISTEN: u32 = 22;
    pub const NET_CLOSE: u32 = 23;
    pub const NET_SEND: u32 = 24;
    pub const DROP_FD_TABLE_FULL: u32 = 30;
    pub const MAX: u32 = 32;

    /// Name of a drop-counter slot, for metrics and the collector event.
    pub fn name(kind: u32) -> Option<&'static str> {
        Some(match kind {
            EXEC => "exec",
            FORK => "fork",
            EXIT => "exit",
            CHDIR => "chdir",
            FILE_OPEN => "file_open",
            FILE_CLOSE => "file_close",
            FILE_UNLINK => "file_unlink",
            FILE_RENAME => "file_rename",
            FD_DUP => "fd_dup",
            NET_CONNECT => "net_connect",
            NET_ACCEPT => "net_accept",
            NET_LISTEN => "net_listen",
            NET_CLOSE => "net_close",
            NET_SEND => "net_send",
            DROP_FD_TABLE_FULL => "fd_table_full",
            _ => return None,
        })
    }
}

pub const F_ARGS_TRUNCATED: u32 = 1 << 0;
pub const F_EXE_TRUNCATED: u32 = 1 << 1;
pub const F_CWD_TRUNCATED: u32 = 1 << 2;

pub const FD_SOCKET: u32 = 2;
pub const CLOSE_SYSCALL: u32 = 1;
pub const CLOSE_REPLACED: u32 = 2;
pub const CLOSE_EXIT: u32 = 3;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub data_len: u32,
    pub comm: [u8; COMM_LEN],
}

impl Header {
    /// A header for a record user space makes itself (flushes, interval
    /// reports): no comm or cgroup, the thread is the process.
    pub fn synthetic(kind: u32, tgid: u32, ts_ns: u64) -> Header {
        Header {
            ts_ns,
            cgroup_id: 0,
            kind,
            tgid,
            tid: tgid,
            data_len: 0,
            comm: [0; COMM_LEN],
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Exec {
    pub h: Header,
    pub start_boottime_ns: u64,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    pub exe_len: u16,
    pub cwd_len: u16,
    pub args_len: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Fork {
    pub h: Header,
    pub child_pid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub h: Header,
    pub exit_code: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Chdir {
    pub h: Header,
    pub flags: u32,
    pub cwd_len: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FileOpen {
    pub h: Header,
    pub ret: i64,
    pub open_id: u64,
    pub flags: u32,
    pub mode: u32,
    pub dfd: i32,
    pub path_len: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FileUnlink {
    pub h: Header,
    pub ret: i64,
    pub dfd: i32,
    pub flags: u32,
    pub path_len: u16,
    pub _pad: [u16; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FdDup {
    pub h: Header,
    pub oldfd: i32,
    pub newfd: i32,
    pub open_id: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FileRename {
    pub h: Header,
    pub ret: i64,
    pub old_dfd: i32,
    pub new_dfd: i32,
    pub flags: u32,
    pub old_len: u16,
    pub new_len: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockAddr {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub family: u16,
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Net {
    pub h: Header,
    pub ret: i64,
    pub open_id: u64,
    pub fd: i32,
    pub _pad: u32,
    pub addr: SockAddr,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FdStats {
    pub open_id: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub reads: u64,
    pub writes: u64,
    pub kind: u32,
    pub flags: u32,
    pub addr: SockAddr,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IoClose {
    pub h: Header,
    pub fd: i32,
    pub reason: u32,
    pub stats: FdStats,
}

// SAFETY: plain-old-data structs of integers and byte arrays with no padding
// holes the kernel would not initialise (every field is written by the BPF
// side or zeroed); any bit pattern is a valid value.
unsafe impl aya::Pod for FdKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FdStats {}

/// A ring-buffer record, decoded: the fixed part plus its variable data.
#[derive(Debug, Clone)]
pub enum Record<'a> {
    Exec {
        rec: Exec,
        exe: &'a [u8],
        cwd: &'a [u8],
        args: &'a [u8],
    },
    Fork(Fork),
    FdDup(FdDup),
    Exit(Exit),
    Chdir {
        rec: Chdir,
        cwd: &'a [u8],
    },
    FileOpen {
        rec: FileOpen,
        path: &'a [u8],
    },
    FileUnlink {
        rec: FileUnlink,
        path: &'a [u8],
    },
    FileRename {
        rec: FileRename,
        old: &'a [u8],
        new: &'a [u8],
    },
    Net(Net),
    IoClose(IoClose),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte fixed part (kind {kind})")]
    Short { kind: u32, len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record kind {kind}: variable data lengths exceed the {available} bytes present")]
    BadLengths { kind: u32, available: usize },
}

fn read<T: Copy>(buf: &[u8], kind: u32) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind,
            len: buf.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: the length was checked above; T is a #[repr(C)] struct of
    // integers for which every bit pattern is valid; read_unaligned copes
    // with the ring buffer's 8-byte record alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Split `data` into consecutive slices of the given lengths.
fn split<const N: usize>(
    data: &[u8],
    lens: [usize; N],
    kind: u32,
) -> Result<[&[u8]; N], DecodeError> {
    let mut out = [&data[..0]; N];
    let mut off = 0;
    for (slot, len) in out.iter_mut().zip(lens) {
        let end = off + len;
        if end > data.len() {
            return Err(DecodeError::BadLengths {
                kind,
                available: data.len(),
            });
        }
        *slot = &data[off..end];
        off = end;
    }
    Ok(out)
}

/// Decode one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    let h: Header = read(buf, 0)?;
    let k = h.kind;
    Ok(match k {
        kind::EXEC => {
            let rec: Exec = read(buf, k)?;
            let data = &buf[size_of::<Exec>()..];
            let [exe, cwd, args] = split(
                data,
                [
                    rec.exe_len as usize,
                    rec.cwd_len as usize,
                    rec.args_len as usize,
                ],
                k,
            )?;
            Record::Exec {
                rec,
                exe,
                cwd,
                args,
            }
        }
        kind::FORK => Record::Fork(read(buf, k)?),
        kind::EXIT => Record::Exit(read(buf, k)?),
        kind::CHDIR => {
            let rec: Chdir = read(buf, k)?;
            let [cwd] = split(&buf[size_of::<Chdir>()..], [rec.cwd_len as usize], k)?;
            Record::Chdir { rec, cwd }
        }
        kind::FILE_OPEN => {
            let rec: FileOpen = read(buf, k)?;
            let [path] = split(&buf[size_of::<FileOpen>()..], [rec.path_len as usize], k)?;
            Record::FileOpen { rec, path }
        }
        kind::FILE_UNLINK => {
            let rec: FileUnlink = read(buf, k)?;
            let [path] = split(&buf[size_of::<FileUnlink>()..], [rec.path_len as usize], k)?;
            Record::FileUnlink { rec, path }
        }
        kind::FILE_RENAME => {
            let rec: FileRename = read(buf, k)?;
            let [old, new] = split(
                &buf[size_of::<FileRename>()..],
                [rec.old_len as usize, rec.new_len as usize],
                k,
            )?;
            Record::FileRename { rec, old, new }
        }
        kind::NET_CONNECT | kind::NET_ACCEPT | kind::NET_LISTEN | kind::NET_SEND => {
            Record::Net(read(buf, k)?)
        }
        kind::FD_DUP => Record::FdDup(read(buf, k)?),
        kind::FILE_CLOSE | kind::NET_CLOSE => Record::IoClose(read(buf, k)?),
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// A dentry path as the BPF side writes it (components leaf first, each NUL
/// terminated) turned into an absolute path.
pub fn dpath(components: &[u8]) -> String {
    let parts: Vec<&[u8]> = components
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut path = String::new();
    for p in parts.iter().rev() {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(p));
    }
    path
}

/// argv as laid out in the process's memory: NUL separated.
pub fn argv(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A fixed-size C string field as text.
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    mod c {
        include!(concat!(env!("OUT_DIR"), "/layout.rs"));
    }

    #[test]
    fn layout_matches_vigil_h() {
        assert_eq!(size_of::<Header>(), c::VIGIL_HEADER_SIZE);
        assert_eq!(offset_of!(Header, ts_ns), c::VIGIL_HEADER_TS_NS);
        assert_eq!(offset_of!(Header, cgroup_id), c::VIGIL_HEADER_CGROUP_ID);
        assert_eq!(offset_of!(Header, kind), c::VIGIL_HEADER_KIND);
        assert_eq!(offset_of!(Header, tgid), c::VIGIL_HEADER_TGID);
        assert_eq!(offset_of!(Header, tid), c::VIGIL_HEADER_TID);
        assert_eq!(offset_of!(Header, data_len), c::VIGIL_HEADER_DATA_LEN);
        assert_eq!(offset_of!(Header, comm), c::VIGIL_HEADER_COMM);

        assert_eq!(size_of::<Exec>(), c::VIGIL_EXEC_SIZE);
        assert_eq!(
            offset_of!(Exec, start_boottime_ns),
            c::VIGIL_EXEC_START_BOOTTIME_NS
        );
        assert_eq!(offset_of!(Exec, ppid), c::VIGIL_EXEC_PPID);
        assert_eq!(offset_of!(Exec, uid), c::VIGIL_EXEC_UID);
        assert_eq!(offset_of!(Exec, gid), c::VIGIL_EXEC_GID);
        assert_eq!(offset_of!(Exec, flags), c::VIGIL_EXEC_FLAGS);
        assert_eq!(offset_of!(Exec, exe_len), c::VIGIL_EXEC_EXE_LEN);
        assert_eq!(offset_of!(Exec, cwd_len), c::VIGIL_EXEC_CWD_LEN);
        assert_eq!(offset_of!(Exec, args_len), c::VIGIL_EXEC_ARGS_LEN);
        assert_eq!(ARGS_LEN, c::VIGIL_ARGS_LEN);

        assert_eq!(size_of::<Fork>(), c::VIGIL_FORK_SIZE);
        assert_eq!(offset_of!(Fork, child_pid), c::VIGIL_FORK_CHILD_PID);
        assert_eq!(size_of::<Exit>(), c::VIGIL_EXIT_SIZE);
        assert_eq!(offset_of!(Exit, exit_code), c::VIGIL_EXIT_EXIT_CODE);
        assert_eq!(size_of::<Chdir>(), c::VIGIL_CHDIR_SIZE);
        assert_eq!(offset_of!(Chdir, flags), c::VIGIL_CHDIR_FLAGS);
        assert_eq!(offset_of!(Chdir, cwd_len), c::VIGIL_CHDIR_CWD_LEN);

        assert_eq!(size_of::<FileOpen>(), c::VIGIL_FILE_OPEN_SIZE);
        assert_eq!(offset_of!(FileOpen, ret), c::VIGIL_FILE_OPEN_RET);
        assert_eq!(offset_of!(FileOpen, open_id), c::VIGIL_FILE_OPEN_OPEN_ID);
        assert_eq!(offset_of!(FileOpen, flags), c::VIGIL_FILE_OPEN_FLAGS);
        assert_eq!(offset_of!(FileOpen, mode), c::VIGIL_FILE_OPEN_MODE);
        assert_eq!(offset_of!(FileOpen, dfd), c::VIGIL_FILE_OPEN_DFD);
        assert_eq!(offset_of!(FileOpen, path_len), c::VIGIL_FILE_OPEN_PATH_LEN);

        assert_eq!(size_of::<FileUnlink>(), c::VIGIL_FILE_UNLINK_SIZE);
        assert_eq!(offset_of!(FileUnlink, ret), c::VIGIL_FILE_UNLINK_RET);
        assert_eq!(offset_of!(FileUnlink, dfd), c::VIGIL_FILE_UNLINK_DFD);
        assert_eq!(offset_of!(FileUnlink, flags), c::VIGIL_FILE_UNLINK_FLAGS);
        assert_eq!(
            offset_of!(FileUnlink, path_len),
            c::VIGIL_FILE_UNLINK_PATH_LEN
        );

        assert_eq!(size_of::<FdDup>(), c::VIGIL_FD_DUP_SIZE);
        assert_eq!(offset_of!(FdDup, oldfd), c::VIGIL_FD_DUP_OLDFD);
        assert_eq!(offset_of!(FdDup, newfd), c::VIGIL_FD_DUP_NEWFD);
        assert_eq!(offset_of!(FdDup, open_id), c::VIGIL_FD_DUP_OPEN_ID);

        assert_eq!(size_of::<FileRename>(), c::VIGIL_FILE_RENAME_SIZE);
        assert_eq!(offset_of!(FileRename, ret), c::VIGIL_FILE_RENAME_RET);
        assert_eq!(
            offset_of!(FileRename, old_dfd),
            c::VIGIL_FILE_RENAME_OLD_DFD
        );
        assert_eq!(
            offset_of!(FileRename, new_dfd),
            c::VIGIL_FILE_RENAME_NEW_DFD
        );
        assert_eq!(offset_of!(FileRename, flags), c::VIGIL_FILE_RENAME_FLAGS);
        assert_eq!(
            offset_of!(FileRename, old_len),
            c::VIGIL_FILE_RENAME_OLD_LEN
        );
        assert_eq!(
            offset_of!(FileRename, new_len),
            c::VIGIL_FILE_RENAME_NEW_LEN
        );

        assert_eq!(size_of::<SockAddr>(), c::VIGIL_SOCKADDR_SIZE);
        assert_eq!(offset_of!(SockAddr, saddr), c::VIGIL_SOCKADDR_SADDR);
        assert_eq!(offset_of!(SockAddr, daddr), c::VIGIL_SOCKADDR_DADDR);
        assert_eq!(offset_of!(SockAddr, family), c::VIGIL_SOCKADDR_FAMILY);
        assert_eq!(offset_of!(SockAddr, protocol), c::VIGIL_SOCKADDR_PROTOCOL);
        assert_eq!(offset_of!(SockAddr, sport), c::VIGIL_SOCKADDR_SPORT);
        assert_eq!(offset_of!(SockAddr, dport), c::VIGIL_SOCKADDR_DPORT);

        assert_eq!(size_of::<Net>(), c::VIGIL_NET_SIZE);
        assert_eq!(offset_of!(Net, ret), c::VIGIL_NET_RET);
        assert_eq!(offset_of!(Net, open_id), c::VIGIL_NET_OPEN_ID);
        assert_eq!(offset_of!(Net, fd), c::VIGIL_NET_FD);
        assert_eq!(offset_of!(Net, addr), c::VIGIL_NET_ADDR);

        assert_eq!(size_of::<FdKey>(), c::VIGIL_FD_KEY_SIZE);
        assert_eq!(offset_of!(FdKey, tgid), c::VIGIL_FD_KEY_TGID);
        assert_eq!(offset_of!(FdKey, fd), c::VIGIL_FD_KEY_FD);
        assert_eq!(size_of::<FdStats>(), c::VIGIL_FD_STATS_SIZE);
        assert_eq!(offset_of!(FdStats, open_id), c::VIGIL_FD_STATS_OPEN_ID);
        assert_eq!(
            offset_of!(FdStats, bytes_read),
            c::VIGIL_FD_STATS_BYTES_READ
        );
        assert_eq!(
            offset_of!(FdStats, bytes_written),
            c::VIGIL_FD_STATS_BYTES_WRITTEN
        );
        assert_eq!(offset_of!(FdStats, reads), c::VIGIL_FD_STATS_READS);
        assert_eq!(offset_of!(FdStats, writes), c::VIGIL_FD_STATS_WRITES);
        assert_eq!(offset_of!(FdStats, kind), c::VIGIL_FD_STATS_TYPE);
        assert_eq!(offset_of!(FdStats, addr), c::VIGIL_FD_STATS_ADDR);

        assert_eq!(size_of::<IoClose>(), c::VIGIL_IO_CLOSE_SIZE);
        assert_eq!(offset_of!(IoClose, fd), c::VIGIL_IO_CLOSE_FD);
        assert_eq!(offset_of!(IoClose, reason), c::VIGIL_IO_CLOSE_REASON);
        assert_eq!(offset_of!(IoClose, stats), c::VIGIL_IO_CLOSE_STATS);
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: T is one of the POD records above; reading its bytes is fine.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: u32, data_len: u32) -> Header {
        Header {
            ts_ns: 1,
            cgroup_id: 2,
            kind,
            tgid: 3,
            tid: 4,
            data_len,
            comm: *b"bash\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn decodes_exec_with_paths_and_argv() {
        let exe = b"ls\0bin\0usr\0";
        let cwd = b"tmp\0";
        let args = b"ls\0-l\0/tmp\0";
        let rec = Exec {
            h: header(kind::EXEC, (exe.len() + cwd.len() + args.len()) as u32),
            start_boottime_ns: 5,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            flags: 0,
            exe_len: exe.len() as u16,
            cwd_len: cwd.len() as u16,
            args_len: args.len() as u16,
            _pad: 0,
        };
        let mut buf = bytes_of(&rec);
        buf.extend_from_slice(exe);
        buf.extend_from_slice(cwd);
        buf.extend_from_slice(args);
        match decode(&buf).unwrap() {
            Record::Exec {
                exe,
                cwd,
                args,
                rec,
            } => {
                assert_eq!(dpath(exe), "/usr/bin/ls");
                assert_eq!(dpath(cwd), "/tmp");
                assert_eq!(argv(args), ["ls", "-l", "/tmp"]);
                assert_eq!(cstr(&rec.h.comm), "bash");
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn rejects_truncated_and_unknown_records() {
        assert!(matches!(decode(&[0u8; 8]), Err(DecodeError::Short { .. })));
        let buf = bytes_of(&Fork {
            h: header(99, 0),
            child_pid: 1,
            _pad: 0,
        });
        assert_eq!(decode(&buf).unwrap_err(), DecodeError::UnknownKind(99));
        let mut rec = FileOpen {
            h: header(kind::FILE_OPEN, 0),
            ret: 3,
            open_id: 1,
            flags: 0,
            mode: 0,
            dfd: -100,
            path_len: 500,
            _pad: 0,
        };
        let buf = bytes_of(&rec);
        assert!(matches!(decode(&buf), Err(DecodeError::BadLengths { .. })));
        rec.path_len = 0;
        assert!(decode(&bytes_of(&rec)).is_ok());
    }

    #[test]
    fn root_and_empty_paths() {
        assert_eq!(dpath(b""), "/");
        assert_eq!(argv(b""), Vec::<String>::new());
    }
}
