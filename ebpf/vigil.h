/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * vigil.h — the one definition of the records the BPF programs write into the
 * ring buffer. The collector mirrors these structs in
 * collector/src/source/records.rs; a build-time probe (collector/build.rs)
 * compiles this header for the host and a unit test checks every size and
 * offset against the Rust mirror.
 *
 * Every record starts with `struct vigil_header`. Records that carry strings
 * have a fixed part followed by `header.data_len` bytes of variable data whose
 * layout the record documents.
 */
#ifndef VIGIL_H
#define VIGIL_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define VIGIL_COMM_LEN 16

/* Path components read from dentries are at most this long (NAME_MAX + 1). */
#define VIGIL_NAME_LEN 256
/* A dentry path stops (and is flagged truncated) once it reaches this length. */
#define VIGIL_DPATH_LEN 1024
/* User-supplied path strings (open, unlink, rename) are read up to this length. */
#define VIGIL_UPATH_LEN 1024
/* argv is read from the new mm up to this many bytes. */
#define VIGIL_ARGS_LEN 4096
/* A forked child inherits the tracking of its parent's fds below this number. */
#define VIGIL_INHERIT_FDS 32
/* Size of the variable data area of the largest record (exec). */
#define VIGIL_DATA_LEN 8192

enum vigil_kind {
	VIGIL_EXEC = 1,
	VIGIL_FORK = 2,
	VIGIL_EXIT = 3,
	VIGIL_CHDIR = 4,
	VIGIL_FILE_OPEN = 10,
	VIGIL_FILE_CLOSE = 11,
	VIGIL_FILE_UNLINK = 12,
	VIGIL_FILE_RENAME = 13,
	VIGIL_FD_DUP = 14,
	VIGIL_NET_CONNECT = 20,
	VIGIL_NET_ACCEPT = 21,
	VIGIL_NET_LISTEN = 22,
	VIGIL_NET_CLOSE = 23,
	VIGIL_NET_SEND = 24,
	/* Not records: slots of the drop counters for in-kernel table failures. */
	VIGIL_DROP_FD_TABLE_FULL = 30,
	VIGIL_KIND_MAX = 32,
};

/* vigil_exec.flags / vigil_chdir.flags */
#define VIGIL_F_ARGS_TRUNCATED (1U << 0)
#define VIGIL_F_EXE_TRUNCATED (1U << 1)
#define VIGIL_F_CWD_TRUNCATED (1U << 2)
#define VIGIL_F_NO_MM (1U << 3)

struct vigil_header {
	__u64 ts_ns;     /* bpf_ktime_get_boot_ns(): monotonic, counts suspend */
	__u64 cgroup_id; /* cgroup v2 id of the task */
	__u32 kind;      /* enum vigil_kind */
	__u32 tgid;
	__u32 tid;
	__u32 data_len;  /* bytes of variable data after the fixed record */
	char comm[VIGIL_COMM_LEN];
};

/*
 * sched_process_exec. Data: exe path components, leaf first, each NUL
 * terminated (exe_len bytes); then cwd the same way (cwd_len bytes); then argv
 * as the kernel lays it out, NUL separated (args_len bytes).
 */
struct vigil_exec {
	struct vigil_header h;
	__u64 start_boottime_ns; /* task->start_boottime, as /proc/PID/stat field 22 */
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 flags;
	__u16 exe_len;
	__u16 cwd_len;
	__u16 args_len;
	__u16 _pad;
};

/*
 * sched_process_fork of a new process (threads are not reported). The child
 * inherits the tracking of the parent's fds below VIGIL_INHERIT_FDS with its
 * own zeroed counters: its writes to an inherited fd (a shell redirection)
 * are counted and reported at its close or exit.
 */
struct vigil_fork {
	struct vigil_header h;
	__u32 child_pid;
	__u32 _pad;
};

/* sched_process_exit of the last thread of a process. */
struct vigil_exit {
	struct vigil_header h;
	__u32 exit_code; /* wait(2) status: code << 8 | signal */
	__u32 _pad;
};

/* chdir/fchdir succeeded. Data: new cwd components, leaf first. */
struct vigil_chdir {
	struct vigil_header h;
	__u32 flags;
	__u16 cwd_len;
	__u16 _pad;
};

/* open/openat/openat2 returned. Data: the path argument (path_len bytes, no NUL). */
struct vigil_file_open {
	struct vigil_header h;
	__s64 ret;      /* fd or -errno */
	__u64 open_id;  /* ts of the open; close records refer to it */
	__u32 flags;    /* O_* flags */
	__u32 mode;
	__s32 dfd;      /* AT_FDCWD (-100) or a directory fd */
	__u16 path_len;
	__u16 _pad;
};

/* unlink/unlinkat returned. Data: the path argument. */
struct vigil_file_unlink {
	struct vigil_header h;
	__s64 ret;
	__s32 dfd;
	__u32 flags;
	__u16 path_len;
	__u16 _pad[3];
};

/*
 * dup/dup2/dup3/fcntl(F_DUPFD) of a tracked fd: the new fd shares the open
 * file (same open_id) and is counted on its own from here (shell redirections).
 */
struct vigil_fd_dup {
	struct vigil_header h;
	__s32 oldfd;
	__s32 newfd;
	__u64 open_id;
};

/* rename/renameat/renameat2 returned. Data: old path, then new path. */
struct vigil_file_rename {
	struct vigil_header h;
	__s64 ret;
	__s32 old_dfd;
	__s32 new_dfd;
	__u32 flags;
	__u16 old_len;
	__u16 new_len;
};

/*
 * The endpoints of a socket as read from its struct sock: addresses in
 * network byte order (IPv4 in the first 4 bytes), ports in host order.
 */
struct vigil_sockaddr {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;   /* AF_INET or AF_INET6 */
	__u16 protocol; /* IPPROTO_TCP or IPPROTO_UDP */
	__u16 sport;
	__u16 dport;
};

/* connect/accept/listen returned, or the first datagram sent on an unconnected socket. */
struct vigil_net {
	struct vigil_header h;
	__s64 ret;
	__u64 open_id;
	__s32 fd;
	__u32 _pad;
	struct vigil_sockaddr addr;
};

/*
 * In-kernel aggregate for one open file or socket of a process, keyed by
 * (tgid, fd). The collector also reads this map to report long-lived flows at
 * an interval and to flush what was open when a process exited.
 */
struct vigil_fd_key {
	__u32 tgid;
	__s32 fd;
};

#define VIGIL_FD_FILE 1
#define VIGIL_FD_SOCKET 2

struct vigil_fd_stats {
	__u64 open_id;
	__u64 bytes_read;
	__u64 bytes_written;
	__u64 reads;
	__u64 writes;
	__u32 type;  /* VIGIL_FD_FILE or VIGIL_FD_SOCKET */
	__u32 flags; /* VIGIL_FD_INHERITED */
	struct vigil_sockaddr addr; /* sockets only */
};

/* vigil_fd_stats.flags: copied from the parent at fork, not opened by this process */
#define VIGIL_FD_INHERITED (1U << 0)

/* vigil_io_close.reason */
#define VIGIL_CLOSE_SYSCALL 1  /* close(2) */
#define VIGIL_CLOSE_REPLACED 2 /* the fd number was reused before we saw a close */
#define VIGIL_CLOSE_EXIT 3     /* still open when the process exited */

/* A tracked fd was closed: FILE_CLOSE or NET_CLOSE with the totals. */
struct vigil_io_close {
	struct vigil_header h;
	__s32 fd;
	__u32 reason;
	struct vigil_fd_stats stats;
};

#endif /* VIGIL_H */
