// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * vigil.bpf.c — Vigil's kernel side: process, file and network telemetry from
 * tracepoints only (sched:*, syscalls:*), so it runs on kernels without
 * kprobes, fentry or BPF LSM.
 *
 * Flow: every program builds its record (see vigil.h) in a per-CPU scratch
 * buffer and copies it into the one ring buffer `events` with its real length;
 * a full ring buffer bumps the per-CPU drop counter of that record kind.
 * Syscalls are observed at sys_exit_*, where the result is known; their
 * arguments come from the user registers saved at entry (bpf_task_pt_regs),
 * so no enter probe or per-thread map is needed (close is seen at entry).
 * Bytes read and written are summed per (tgid, fd) in `fds` and reported
 * when the fd is closed, dup'd over, or (fds below VIGIL_INHERIT_FDS) when
 * the process exits; user space flushes higher fds at exit and reads
 * long-lived sockets at an interval.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "vigil.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by the collector at load time: its own tgid, whose activity is not reported. */
const volatile __u32 self_tgid = 0;

#define AF_INET 2
#define AF_INET6 10
#define EINPROGRESS 115
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define CLONE_THREAD 0x00010000
#define PF_KTHREAD 0x00200000

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* overridden from the config */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VIGIL_KIND_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* overridden from the config */
	__type(key, struct vigil_fd_key);
	__type(value, struct vigil_fd_stats);
} fds SEC(".maps");

/* A power of two above the largest record, so lengths can be bounded by masking. */
#define SCRATCH_LEN 16384
_Static_assert(sizeof(struct vigil_exec) + VIGIL_DATA_LEN <= SCRATCH_LEN, "scratch too small");
struct scratch {
	__u8 buf[SCRATCH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline void *scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

static __always_inline void count_drop(__u32 kind)
{
	__u64 *n = bpf_map_lookup_elem(&drops, &kind);
	if (n)
		*n += 1; /* per-CPU slot: no other writer */
}

static __always_inline bool ignored(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return self_tgid != 0 && tgid == self_tgid;
}

static __always_inline void fill_header(struct vigil_header *h, __u32 kind)
{
	__u64 id = bpf_get_current_pid_tgid();
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->kind = kind;
	h->tgid = id >> 32;
	h->tid = (__u32)id;
	h->data_len = 0;
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

/* Copy a finished record into the ring buffer, counting a drop when it is full. */
static __always_inline void submit(void *rec, __u64 len, __u32 kind)
{
	len &= (SCRATCH_LEN - 1);
	if (bpf_ringbuf_output(&events, rec, len, 0) != 0)
		count_drop(kind);
}

/*
 * Path of a (dentry, vfsmount) pair as components, leaf first, each NUL
 * terminated, crossing mount points up to the root of the mount namespace.
 * `buf` must have VIGIL_DPATH_LEN + VIGIL_NAME_LEN bytes.
 */
static __always_inline __u32 read_dpath(struct dentry *dentry, struct vfsmount *vfsmnt,
					char *buf, __u32 *flags, __u32 trunc_flag)
{
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);
	__u32 off = 0;

#pragma unroll
	for (int i = 0; i < 24; i++) {
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);

		if (dentry == mnt_root || dentry == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
			if (mnt_parent == mnt || !mnt_parent)
				return off; /* reached the namespace root */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = &mnt->mnt;
			continue;
		}
		if (off >= VIGIL_DPATH_LEN) {
			*flags |= trunc_flag;
			return off;
		}
		const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
		long n = bpf_probe_read_kernel_str(&buf[off & (VIGIL_DPATH_LEN - 1)], VIGIL_NAME_LEN,
						   name);
		if (n > 0)
			off += n;
		dentry = parent;
	}
	*flags |= trunc_flag;
	return off;
}

/*
 * Syscall arguments at sys_exit: the user registers saved at syscall entry
 * still hold them, so exit handlers need no enter probe and no per-thread map.
 */
static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

#if defined(__TARGET_ARCH_x86)
#define SYS_ARG0(r) BPF_CORE_READ(r, di)
#define SYS_ARG1(r) BPF_CORE_READ(r, si)
#define SYS_ARG2(r) BPF_CORE_READ(r, dx)
#define SYS_ARG3(r) BPF_CORE_READ(r, r10)
#define SYS_ARG4(r) BPF_CORE_READ(r, r8)
#define SYS_NR(r) BPF_CORE_READ(r, orig_ax)
#define NR_CLONE 56
#define NR_CLONE3 435
#elif defined(__TARGET_ARCH_arm64)
#define SYS_ARG0(r) BPF_CORE_READ(r, orig_x0)
#define SYS_ARG1(r) BPF_CORE_READ(r, regs[1])
#define SYS_ARG2(r) BPF_CORE_READ(r, regs[2])
#define SYS_ARG3(r) BPF_CORE_READ(r, regs[3])
#define SYS_ARG4(r) BPF_CORE_READ(r, regs[4])
#define SYS_NR(r) BPF_CORE_READ(r, syscallno)
#define NR_CLONE 220
#define NR_CLONE3 435
#else
#error "unsupported architecture"
#endif

/* In sched_process_fork: is the current clone creating a thread? */
static __always_inline bool forking_a_thread(void)
{
	struct pt_regs *regs = user_regs();
	long nr = SYS_NR(regs);
	__u64 flags = 0;
	if (nr == NR_CLONE)
		flags = SYS_ARG0(regs);
	else if (nr == NR_CLONE3) /* struct clone_args starts with its u64 flags */
		bpf_probe_read_user(&flags, sizeof(flags), (void *)SYS_ARG0(regs));
	return flags & CLONE_THREAD;
}

static __always_inline __u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

/* Report a tracked fd's totals: FILE_CLOSE or NET_CLOSE. Uses the scratch buffer. */
static __always_inline void emit_close(__s32 fd, struct vigil_fd_stats *stats, __u32 reason)
{
	struct vigil_io_close *rec = scratch();
	if (!rec)
		return;
	__u32 kind = stats->type == VIGIL_FD_SOCKET ? VIGIL_NET_CLOSE : VIGIL_FILE_CLOSE;
	fill_header(&rec->h, kind);
	rec->fd = fd;
	rec->reason = reason;
	__builtin_memcpy(&rec->stats, stats, sizeof(rec->stats));
	submit(rec, sizeof(*rec), kind);
}

/* Report a tracked fd being closed, unless it was only inherited and never used. */
static __always_inline void report_close(__s32 fd, struct vigil_fd_stats *stats, __u32 reason)
{
	if ((stats->flags & VIGIL_FD_INHERITED) && stats->reads == 0 && stats->writes == 0)
		return;
	emit_close(fd, stats, reason);
}

/* ---------------------------------------------------------------- process */

SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(void *ctx)
{
	if (ignored())
		return 0;
	struct vigil_exec *rec = scratch();
	if (!rec)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	char *data = (char *)(rec + 1);
	__u64 ugid = bpf_get_current_uid_gid();

	fill_header(&rec->h, VIGIL_EXEC);
	rec->start_boottime_ns = BPF_CORE_READ(task, start_boottime);
	rec->ppid = BPF_CORE_READ(task, real_parent, tgid);
	rec->uid = (__u32)ugid;
	rec->gid = ugid >> 32;
	rec->flags = 0;
	rec->exe_len = 0;
	rec->cwd_len = 0;
	rec->args_len = 0;
	rec->_pad = 0;

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	__u32 off = 0;
	if (mm) {
		struct file *exe = BPF_CORE_READ(mm, exe_file);
		if (exe) {
			off = read_dpath(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt),
					 data, &rec->flags, VIGIL_F_EXE_TRUNCATED);
		}
	} else {
		rec->flags |= VIGIL_F_NO_MM;
	}
	off &= 2047;
	rec->exe_len = off;

	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 cwd_len = read_dpath(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt),
				   &data[off], &rec->flags, VIGIL_F_CWD_TRUNCATED);
	cwd_len &= 2047;
	rec->cwd_len = cwd_len;
	off = (off + cwd_len) & 4095;

	if (mm) {
		unsigned long start = BPF_CORE_READ(mm, arg_start);
		unsigned long end = BPF_CORE_READ(mm, arg_end);
		__u64 len = end > start ? end - start : 0;
		if (len > VIGIL_ARGS_LEN - 1) {
			len = VIGIL_ARGS_LEN - 1;
			rec->flags |= VIGIL_F_ARGS_TRUNCATED;
		}
		len &= (VIGIL_ARGS_LEN - 1);
		if (len > 0 && bpf_probe_read_user(&data[off], len, (void *)start) == 0)
			rec->args_len = len;
	}
	rec->h.data_len = (off + rec->args_len) & (VIGIL_DATA_LEN - 1);
	submit(rec, sizeof(*rec) + rec->h.data_len, VIGIL_EXEC);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int sched_process_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	if (ignored())
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return 0;
	if (forking_a_thread())
		return 0;
	struct vigil_fork rec = {};
	fill_header(&rec.h, VIGIL_FORK);
	rec.child_pid = BPF_CORE_READ(ctx, child_pid);

	for (int fd = 0; fd < VIGIL_INHERIT_FDS; fd++) {
		struct vigil_fd_key key = {.tgid = rec.h.tgid, .fd = fd};
		struct vigil_fd_stats *st = bpf_map_lookup_elem(&fds, &key);
		if (!st)
			continue;
		struct vigil_fd_stats copy = {
			.open_id = st->open_id, .type = st->type, .flags = VIGIL_FD_INHERITED};
		__builtin_memcpy(&copy.addr, &st->addr, sizeof(copy.addr));
		key.tgid = rec.child_pid;
		if (bpf_map_update_elem(&fds, &key, &copy, BPF_ANY) != 0)
			count_drop(VIGIL_DROP_FD_TABLE_FULL);
	}
	submit(&rec, sizeof(rec), VIGIL_FORK);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int sched_process_exit(void *ctx)
{
	if (ignored())
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return 0;
	/* signal->live is decremented before this tracepoint: 0 means the whole process is gone */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	/* what is still open below VIGIL_INHERIT_FDS is reported (or dropped) before the exit */
	__u32 tgid = current_tgid();
	for (int fd = 0; fd < VIGIL_INHERIT_FDS; fd++) {
		struct vigil_fd_key key = {.tgid = tgid, .fd = fd};
		struct vigil_fd_stats *st = bpf_map_lookup_elem(&fds, &key);
		if (!st)
			continue;
		report_close(fd, st, VIGIL_CLOSE_EXIT);
		bpf_map_delete_elem(&fds, &key);
	}
	struct vigil_exit rec = {};
	fill_header(&rec.h, VIGIL_EXIT);
	rec.exit_code = BPF_CORE_READ(task, exit_code);
	submit(&rec, sizeof(rec), VIGIL_EXIT);
	return 0;
}

/* Read a sys_exit result once: keeps clang from re-deriving ctx pointers the verifier rejects. */
static __always_inline long sys_ret(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	asm volatile("" : "+r"(ret));
	return ret;
}

/* -------------------------------------------------------------------- cwd */

static __always_inline int exit_chdir(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored() || sys_ret(ctx) != 0)
		return 0;
	struct vigil_chdir *rec = scratch();
	if (!rec)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	char *data = (char *)(rec + 1);
	fill_header(&rec->h, VIGIL_CHDIR);
	rec->flags = 0;
	rec->_pad = 0;
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 len = read_dpath(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), data,
			       &rec->flags, VIGIL_F_CWD_TRUNCATED);
	len &= 2047;
	rec->cwd_len = len;
	rec->h.data_len = len;
	submit(rec, sizeof(*rec) + len, VIGIL_CHDIR);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_chdir")
int sys_exit_chdir(struct trace_event_raw_sys_exit *ctx)
{
	return exit_chdir(ctx);
}

SEC("tracepoint/syscalls/sys_exit_fchdir")
int sys_exit_fchdir(struct trace_event_raw_sys_exit *ctx)
{
	return exit_chdir(ctx);
}

/* ------------------------------------------------------------------ files */

/* The fd number now names another file: report and forget what it held. */
static __always_inline void forget_fd(__s32 fd)
{
	struct vigil_fd_key key = {.tgid = current_tgid(), .fd = fd};
	struct vigil_fd_stats *old = bpf_map_lookup_elem(&fds, &key);
	if (old) {
		report_close(fd, old, VIGIL_CLOSE_REPLACED);
		bpf_map_delete_elem(&fds, &key);
	}
}

/* A new fd of this process: report whatever the slot held before (missed close), then track it. */
static __always_inline void track_fd(__s32 fd, struct vigil_fd_stats *stats)
{
	struct vigil_fd_key key = {.tgid = current_tgid(), .fd = fd};
	struct vigil_fd_stats *old = bpf_map_lookup_elem(&fds, &key);
	if (old)
		report_close(fd, old, VIGIL_CLOSE_REPLACED);
	if (bpf_map_update_elem(&fds, &key, stats, BPF_ANY) != 0)
		count_drop(VIGIL_DROP_FD_TABLE_FULL);
}

static __always_inline int exit_open(struct trace_event_raw_sys_exit *ctx, __s32 dfd, __u64 path,
				     __u64 flags, __u64 mode)
{
	long ret = sys_ret(ctx);
	__u64 open_id = bpf_ktime_get_boot_ns();
	if (ret >= 0) {
		/* before the record is built: track_fd may use the scratch buffer itself */
		struct vigil_fd_stats stats = {.open_id = open_id, .type = VIGIL_FD_FILE};
		track_fd((__s32)ret, &stats);
	}
	struct vigil_file_open *rec = scratch();
	if (!rec)
		return 0;
	char *data = (char *)(rec + 1);
	fill_header(&rec->h, VIGIL_FILE_OPEN);
	rec->ret = ret;
	rec->open_id = open_id;
	rec->dfd = dfd;
	rec->flags = (__u32)flags;
	rec->mode = (__u32)mode;
	rec->_pad = 0;
	long n = bpf_probe_read_user_str(data, VIGIL_UPATH_LEN, (void *)path);
	__u32 len = n > 0 ? (__u32)(n - 1) : 0;
	len &= (VIGIL_UPATH_LEN - 1);
	rec->path_len = len;
	rec->h.data_len = len;
	submit(rec, sizeof(*rec) + len, VIGIL_FILE_OPEN);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int sys_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	return exit_open(ctx, -100, SYS_ARG0(r), SYS_ARG1(r), SYS_ARG2(r));
}

SEC("tracepoint/syscalls/sys_exit_openat")
int sys_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	return exit_open(ctx, (__s32)SYS_ARG0(r), SYS_ARG1(r), SYS_ARG2(r), SYS_ARG3(r));
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int sys_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	/* struct open_how { u64 flags; u64 mode; u64 resolve; } */
	__u64 how[2] = {};
	bpf_probe_read_user(how, sizeof(how), (void *)SYS_ARG2(r));
	return exit_open(ctx, (__s32)SYS_ARG0(r), SYS_ARG1(r), how[0], how[1]);
}

SEC("tracepoint/syscalls/sys_enter_close")
int sys_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	if (ignored())
		return 0;
	struct vigil_fd_key key = {.tgid = current_tgid(), .fd = (__s32)ctx->args[0]};
	struct vigil_fd_stats *stats = bpf_map_lookup_elem(&fds, &key);
	if (!stats)
		return 0;
	report_close(key.fd, stats, VIGIL_CLOSE_SYSCALL);
	bpf_map_delete_elem(&fds, &key);
	return 0;
}

static __always_inline int exit_unlink(struct trace_event_raw_sys_exit *ctx, __s32 dfd, __u64 path,
				       __u32 flags)
{
	long ret = sys_ret(ctx);
	struct vigil_file_unlink *rec = scratch();
	if (!rec)
		return 0;
	char *data = (char *)(rec + 1);
	fill_header(&rec->h, VIGIL_FILE_UNLINK);
	rec->ret = ret;
	rec->dfd = dfd;
	rec->flags = flags;
	__builtin_memset(rec->_pad, 0, sizeof(rec->_pad));
	long n = bpf_probe_read_user_str(data, VIGIL_UPATH_LEN, (void *)path);
	__u32 len = n > 0 ? (__u32)(n - 1) : 0;
	len &= (VIGIL_UPATH_LEN - 1);
	rec->path_len = len;
	rec->h.data_len = len;
	submit(rec, sizeof(*rec) + len, VIGIL_FILE_UNLINK);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_unlink")
int sys_exit_unlink(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	return exit_unlink(ctx, -100, SYS_ARG0(user_regs()), 0);
}

SEC("tracepoint/syscalls/sys_exit_unlinkat")
int sys_exit_unlinkat(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	return exit_unlink(ctx, (__s32)SYS_ARG0(r), SYS_ARG1(r), (__u32)SYS_ARG2(r));
}

static __always_inline int exit_rename(struct trace_event_raw_sys_exit *ctx, __s32 old_dfd,
				       __u64 oldname, __s32 new_dfd, __u64 newname, __u32 flags)
{
	long ret = sys_ret(ctx);
	struct vigil_file_rename *rec = scratch();
	if (!rec)
		return 0;
	char *data = (char *)(rec + 1);
	fill_header(&rec->h, VIGIL_FILE_RENAME);
	rec->ret = ret;
	rec->old_dfd = old_dfd;
	rec->new_dfd = new_dfd;
	rec->flags = flags;
	long n = bpf_probe_read_user_str(data, VIGIL_UPATH_LEN, (void *)oldname);
	__u32 old_len = n > 0 ? (__u32)(n - 1) : 0;
	old_len &= (VIGIL_UPATH_LEN - 1);
	n = bpf_probe_read_user_str(&data[old_len], VIGIL_UPATH_LEN, (void *)newname);
	__u32 new_len = n > 0 ? (__u32)(n - 1) : 0;
	new_len &= (VIGIL_UPATH_LEN - 1);
	rec->old_len = old_len;
	rec->new_len = new_len;
	rec->h.data_len = old_len + new_len;
	submit(rec, sizeof(*rec) + old_len + new_len, VIGIL_FILE_RENAME);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_rename")
int sys_exit_rename(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	return exit_rename(ctx, -100, SYS_ARG0(r), -100, SYS_ARG1(r), 0);
}

SEC("tracepoint/syscalls/sys_exit_renameat")
int sys_exit_renameat(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	return exit_rename(ctx, (__s32)SYS_ARG0(r), SYS_ARG1(r), (__s32)SYS_ARG2(r), SYS_ARG3(r), 0);
}

SEC("tracepoint/syscalls/sys_exit_renameat2")
int sys_exit_renameat2(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	return exit_rename(ctx, (__s32)SYS_ARG0(r), SYS_ARG1(r), (__s32)SYS_ARG2(r), SYS_ARG3(r),
			   (__u32)SYS_ARG4(r));
}

/* ------------------------------------------------------------------- dup */

/* newfd: the target of dup2/dup3 (whose old file is implicitly closed), or -1. */
static __always_inline int exit_dup(struct trace_event_raw_sys_exit *ctx, __s32 oldfd)
{
	long ret = sys_ret(ctx);
	if (ret < 0 || (__s32)ret == oldfd)
		return 0;
	struct vigil_fd_key old = {.tgid = current_tgid(), .fd = oldfd};
	struct vigil_fd_stats *st = bpf_map_lookup_elem(&fds, &old);
	if (!st) {
		forget_fd((__s32)ret);
		return 0;
	}
	struct vigil_fd_stats copy = {.open_id = st->open_id, .type = st->type};
	__builtin_memcpy(&copy.addr, &st->addr, sizeof(copy.addr));
	track_fd((__s32)ret, &copy);
	struct vigil_fd_dup rec = {};
	fill_header(&rec.h, VIGIL_FD_DUP);
	rec.oldfd = oldfd;
	rec.newfd = (__s32)ret;
	rec.open_id = copy.open_id;
	submit(&rec, sizeof(rec), VIGIL_FD_DUP);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_dup")
int sys_exit_dup(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	return exit_dup(ctx, (__s32)SYS_ARG0(user_regs()));
}

SEC("tracepoint/syscalls/sys_exit_dup2")
int sys_exit_dup2(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	return exit_dup(ctx, (__s32)SYS_ARG0(user_regs()));
}

SEC("tracepoint/syscalls/sys_exit_dup3")
int sys_exit_dup3(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	return exit_dup(ctx, (__s32)SYS_ARG0(user_regs()));
}

SEC("tracepoint/syscalls/sys_exit_fcntl")
int sys_exit_fcntl(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	struct pt_regs *r = user_regs();
	__u64 cmd = SYS_ARG1(r);
	/* F_DUPFD (0) and F_DUPFD_CLOEXEC (1030) return a new fd */
	if (cmd != 0 && cmd != 1030)
		return 0;
	return exit_dup(ctx, (__s32)SYS_ARG0(r));
}

/* ---------------------------------------------------------------- network */

/* The struct sock behind fd of the current process, or NULL if fd is no socket. */
static __always_inline struct sock *sock_of_fd(__s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **slots = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &slots[fd]);
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(sock, sk);
}

/* Read a socket's endpoints; false for families other than IPv4/IPv6. */
static __always_inline bool read_sock(struct sock *sk, struct vigil_sockaddr *a)
{
	if (!sk)
		return false;
	__builtin_memset(a, 0, sizeof(*a));
	a->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	a->protocol = BPF_CORE_READ(sk, sk_protocol);
	a->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	a->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (a->family == AF_INET) {
		__u32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(a->saddr, &s, 4);
		__builtin_memcpy(a->daddr, &d, 4);
		return true;
	}
	if (a->family == AF_INET6) {
		BPF_CORE_READ_INTO(&a->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&a->daddr, sk, __sk_common.skc_v6_daddr);
		return true;
	}
	return false;
}

/* Overwrite the remote endpoint with a user sockaddr (connect, sendto). */
static __always_inline bool read_user_remote(__u64 uaddr, struct vigil_sockaddr *a)
{
	__u16 family = 0;
	if (!uaddr || bpf_probe_read_user(&family, sizeof(family), (void *)uaddr) != 0)
		return false;
	if (family == AF_INET) {
		struct sockaddr_in sin = {};
		bpf_probe_read_user(&sin, sizeof(sin), (void *)uaddr);
		__builtin_memset(a->daddr, 0, sizeof(a->daddr));
		__builtin_memcpy(a->daddr, &sin.sin_addr.s_addr, 4);
		a->dport = __builtin_bswap16(sin.sin_port);
		a->family = AF_INET;
		return true;
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 sin6 = {};
		bpf_probe_read_user(&sin6, sizeof(sin6), (void *)uaddr);
		__builtin_memcpy(a->daddr, &sin6.sin6_addr, 16);
		a->dport = __builtin_bswap16(sin6.sin6_port);
		a->family = AF_INET6;
		return true;
	}
	return false;
}

static __always_inline void emit_net(__u32 kind, __s64 ret, __s32 fd, __u64 open_id,
				     struct vigil_sockaddr *a)
{
	struct vigil_net rec = {};
	fill_header(&rec.h, kind);
	rec.ret = ret;
	rec.fd = fd;
	rec.open_id = open_id;
	__builtin_memcpy(&rec.addr, a, sizeof(rec.addr));
	submit(&rec, sizeof(rec), kind);
}

static __always_inline void track_socket(__s32 fd, __u64 open_id, struct vigil_sockaddr *a)
{
	struct vigil_fd_stats stats = {.open_id = open_id, .type = VIGIL_FD_SOCKET};
	__builtin_memcpy(&stats.addr, a, sizeof(stats.addr));
	track_fd(fd, &stats);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	long ret = sys_ret(ctx);
	struct pt_regs *r = user_regs();
	__s32 fd = (__s32)SYS_ARG0(r);
	struct vigil_sockaddr a = {};
	if (!read_sock(sock_of_fd(fd), &a))
		return 0;
	if (!read_user_remote(SYS_ARG1(r), &a))
		return 0;
	__u64 open_id = bpf_ktime_get_boot_ns();
	if (ret == 0 || ret == -EINPROGRESS)
		track_socket(fd, open_id, &a);
	emit_net(VIGIL_NET_CONNECT, ret, fd, open_id, &a);
	return 0;
}

static __always_inline int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	long ret = sys_ret(ctx);
	if (ret < 0)
		return 0;
	__s32 fd = (__s32)ret;
	struct vigil_sockaddr a = {};
	if (!read_sock(sock_of_fd(fd), &a))
		return 0;
	__u64 open_id = bpf_ktime_get_boot_ns();
	track_socket(fd, open_id, &a);
	emit_net(VIGIL_NET_ACCEPT, ret, fd, open_id, &a);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx);
}

/* A bound socket (a UDP server, or a TCP listener) is tracked so its traffic is counted. */
SEC("tracepoint/syscalls/sys_exit_bind")
int sys_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored() || sys_ret(ctx) != 0)
		return 0;
	__s32 fd = (__s32)SYS_ARG0(user_regs());
	struct vigil_sockaddr a = {};
	if (!read_sock(sock_of_fd(fd), &a))
		return 0;
	track_socket(fd, bpf_ktime_get_boot_ns(), &a);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_listen")
int sys_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	long ret = sys_ret(ctx);
	__s32 fd = (__s32)SYS_ARG0(user_regs());
	struct vigil_sockaddr a = {};
	if (!read_sock(sock_of_fd(fd), &a))
		return 0;
	struct vigil_fd_key key = {.tgid = current_tgid(), .fd = fd};
	struct vigil_fd_stats *st = bpf_map_lookup_elem(&fds, &key);
	emit_net(VIGIL_NET_LISTEN, ret, fd, st ? st->open_id : 0, &a);
	return 0;
}

/* ----------------------------------------------------------- byte counts */

#define IO_READ 0
#define IO_WRITE 1

/* Add a read/write result to its fd's totals; most I/O costs one lookup. */
static __always_inline void count_io(struct trace_event_raw_sys_exit *ctx, int dir)
{
	if (ignored())
		return;
	long ret = sys_ret(ctx);
	if (ret <= 0)
		return;
	struct vigil_fd_key key = {.tgid = current_tgid(), .fd = (__s32)SYS_ARG0(user_regs())};
	struct vigil_fd_stats *st = bpf_map_lookup_elem(&fds, &key);
	if (!st)
		return;
	if (dir == IO_READ) {
		__sync_fetch_and_add(&st->bytes_read, ret);
		__sync_fetch_and_add(&st->reads, 1);
	} else {
		__sync_fetch_and_add(&st->bytes_written, ret);
		__sync_fetch_and_add(&st->writes, 1);
	}
}

#define IO_PROBE(name, dir)                                                \
	SEC("tracepoint/syscalls/sys_exit_" #name)                         \
	int sys_exit_##name(struct trace_event_raw_sys_exit *ctx)          \
	{                                                                  \
		count_io(ctx, dir);                                        \
		return 0;                                                  \
	}

IO_PROBE(read, IO_READ)
IO_PROBE(write, IO_WRITE)
IO_PROBE(pread64, IO_READ)
IO_PROBE(pwrite64, IO_WRITE)
IO_PROBE(readv, IO_READ)
IO_PROBE(writev, IO_WRITE)
IO_PROBE(recvfrom, IO_READ)
IO_PROBE(recvmsg, IO_READ)
IO_PROBE(sendmsg, IO_WRITE)

/* sendto(fd, buf, len, flags, dest_addr, addrlen): dest_addr may open a UDP flow */
SEC("tracepoint/syscalls/sys_exit_sendto")
int sys_exit_sendto(struct trace_event_raw_sys_exit *ctx)
{
	if (ignored())
		return 0;
	long ret = sys_ret(ctx);
	if (ret <= 0)
		return 0;
	struct pt_regs *r = user_regs();
	struct vigil_fd_key key = {.tgid = current_tgid(), .fd = (__s32)SYS_ARG0(r)};
	__u64 uaddr = SYS_ARG4(r);
	struct vigil_fd_stats *st = bpf_map_lookup_elem(&fds, &key);
	if (!st) {
		if (!uaddr)
			return 0;
		/* first datagram to an address on an unconnected socket: a new flow */
		struct vigil_sockaddr a = {};
		if (!read_sock(sock_of_fd(key.fd), &a) || !read_user_remote(uaddr, &a))
			return 0;
		__u64 open_id = bpf_ktime_get_boot_ns();
		track_socket(key.fd, open_id, &a);
		emit_net(VIGIL_NET_SEND, ret, key.fd, open_id, &a);
		st = bpf_map_lookup_elem(&fds, &key);
		if (!st)
			return 0;
	} else if (uaddr && st->addr.dport == 0) {
		/* a bound but unconnected socket sends its first datagram: that is its peer */
		struct vigil_sockaddr a = st->addr;
		if (read_user_remote(uaddr, &a)) {
			st->addr = a;
			emit_net(VIGIL_NET_SEND, ret, key.fd, st->open_id, &a);
		}
	}
	__sync_fetch_and_add(&st->bytes_written, ret);
	__sync_fetch_and_add(&st->writes, 1);
	return 0;
}
