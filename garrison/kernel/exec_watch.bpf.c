// SPDX-License-Identifier: GPL-2.0
/* Code run in a container without an exec the fanotify gate could hold, seen from the kernel for the
 * cell defender (built by scripts/bootstrap with clang, loaded by garrison/kernel/bpf.py via libbpf).
 * Watched containers: map `scopes`, key = the inode number of the container's mount namespace, value
 * = when its app started and what its rule does with drift.
 * - memfd_create(MFD_EXEC) (refused where the defender set vm.memfd_noexec = 2: reported, since the
 *   kernel only logs a cell-wide pid) and a program run from a memfd (reported).
 * - a file mapped executable by mmap with PROT_EXEC (LD_PRELOAD, dlopen) whose data changed after the
 *   app started: a dropped or rewritten library, i.e. drift. Reported, and under prevention the
 *   process is sent SIGKILL at the call's entry: it is delivered before the call returns to user
 *   space, so no instruction of the mapping runs (a tracepoint cannot make the call fail; this kernel
 *   refuses BPF LSM programs and has no kprobes, see docs/cell.md). Read-only mounts, the
 *   overlay's lower layers (a write copies up first) and memfds (anonymous memory by another name, as
 *   JITs use them) are not drift; the program's own mapping was decided by its exec.
 * Kernel structures are declared with only the fields used, relocated against the running kernel's
 * BTF (CO-RE): no kernel headers are needed to build. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define MFD_EXEC 0x10U
#define PROT_EXEC 0x4
#define SB_RDONLY 0x1
#define MNT_READONLY 0x40
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define NSEC_MASK 0x3fffffff /* multigrain timestamps keep a flag above the nanoseconds */
#define SIGKILL 9
#define MAP_ANONYMOUS 0x20
#define SCOPE_DENY 1 /* drift refused (the process killed), else reported */
enum { EV_MFD_EXEC = 1, EV_MEMFD_RUN = 2, EV_MAPPED_DRIFT = 3 };

struct qstr { union { struct { __u32 hash; __u32 len; }; __u64 hash_len; }; const unsigned char *name; }
    __attribute__((preserve_access_index));
struct super_block { unsigned long s_magic; unsigned long s_flags; } __attribute__((preserve_access_index));
struct inode {
	struct super_block *i_sb; unsigned long i_ino; long long i_ctime_sec; __u32 i_ctime_nsec;
} __attribute__((preserve_access_index));
struct dentry { struct qstr d_name; struct inode *d_inode; struct dentry *d_parent; } __attribute__((preserve_access_index));
struct vfsmount { int mnt_flags; } __attribute__((preserve_access_index));
struct path { struct vfsmount *mnt; struct dentry *dentry; } __attribute__((preserve_access_index));
struct file { struct path f_path; struct inode *f_inode; } __attribute__((preserve_access_index));
struct fdtable { unsigned int max_fds; struct file **fd; } __attribute__((preserve_access_index));
struct files_struct { struct fdtable *fdt; } __attribute__((preserve_access_index));
struct ovl_inode { struct inode vfs_inode; struct dentry *__upperdentry; } __attribute__((preserve_access_index));
struct mm_struct { struct file *exe_file; } __attribute__((preserve_access_index));
struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct mnt_namespace { struct ns_common ns; } __attribute__((preserve_access_index));
struct nsproxy { struct mnt_namespace *mnt_ns; } __attribute__((preserve_access_index));
struct task_struct { struct nsproxy *nsproxy; struct mm_struct *mm; struct files_struct *files; }
    __attribute__((preserve_access_index));

struct memfd_create_args { __u64 common; __s32 nr; __u32 pad; __u64 uname; __u64 flags; };
struct scope { __u64 app_start_ns; __u32 flags; __u32 pad; };
struct event {
	__u32 kind; __u32 tgid; __u32 mntns; __u32 denied; __u64 ino; char comm[16]; char name[64]; char dir[64];
};

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4096); __type(key, __u32); __type(value, struct scope); }
    scopes SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 18); } events SEC(".maps");

char LICENSE[] SEC("license") = "GPL";

static __always_inline struct scope *watched(__u32 *ns)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	*ns = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	return bpf_map_lookup_elem(&scopes, ns);
}

static __always_inline struct event *reserve(__u32 kind, __u32 ns)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->kind = kind;
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	e->mntns = ns;
	e->denied = 0;
	e->ino = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->name[0] = 0;
	e->dir[0] = 0;
	return e;
}

static __always_inline int is_memfd(const unsigned char *n)
{
	char head[6] = {};
	if (!n || bpf_probe_read_kernel(head, sizeof(head), n) < 0)
		return 0;
	return head[0] == 'm' && head[1] == 'e' && head[2] == 'm' && head[3] == 'f' && head[4] == 'd' && head[5] == ':';
}

SEC("tracepoint/syscalls/sys_enter_memfd_create")
int memfd_create_exec(struct memfd_create_args *ctx)
{
	__u32 ns;
	if (!(ctx->flags & MFD_EXEC) || !watched(&ns))
		return 0;
	struct event *e = reserve(EV_MFD_EXEC, ns);
	if (!e)
		return 0;
	if (bpf_probe_read_user_str(e->name, sizeof(e->name), (const void *)ctx->uname) < 0)
		e->name[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int memfd_run(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	const unsigned char *n = BPF_CORE_READ(t, mm, exe_file, f_path.dentry, d_name.name);
	__u32 ns;
	if (!is_memfd(n) || !watched(&ns))
		return 0;
	struct event *e = reserve(EV_MEMFD_RUN, ns);
	if (!e)
		return 0;
	if (bpf_probe_read_kernel_str(e->name, sizeof(e->name), n) < 0)
		e->name[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* When the file's data last changed: an overlay file's upper inode once it has one (a write through a
 * shared mapping updates that one, not the overlay's); 0 for a file only in the lower layers. */
static __always_inline __u64 data_changed_ns(struct inode *inode)
{
	struct inode *real = inode;
	if (BPF_CORE_READ(inode, i_sb, s_magic) == OVERLAYFS_SUPER_MAGIC) {
		struct ovl_inode *oi = (void *)inode - bpf_core_field_offset(struct ovl_inode, vfs_inode);
		struct dentry *upper = BPF_CORE_READ(oi, __upperdentry);
		real = upper ? BPF_CORE_READ(upper, d_inode) : 0;
		if (!real)
			return 0;
	}
	return BPF_CORE_READ(real, i_ctime_sec) * 1000000000ULL + (BPF_CORE_READ(real, i_ctime_nsec) & NSEC_MASK);
}

static __always_inline void mapped(struct file *file)
{
	__u32 ns;
	struct scope *s = watched(&ns);
	if (!s || !s->app_start_ns || !file)
		return;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct task_struct *t = (void *)bpf_get_current_task();
	if (BPF_CORE_READ(t, mm, exe_file, f_inode) == inode)
		return;
	if ((BPF_CORE_READ(inode, i_sb, s_flags) & SB_RDONLY) || (BPF_CORE_READ(file, f_path.mnt, mnt_flags) & MNT_READONLY))
		return;
	struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
	const unsigned char *n = BPF_CORE_READ(d, d_name.name);
	if (is_memfd(n))
		return;
	if (data_changed_ns(inode) < s->app_start_ns)
		return;
	int deny = s->flags & SCOPE_DENY;
	if (deny)
		bpf_send_signal(SIGKILL);
	struct event *e = reserve(EV_MAPPED_DRIFT, ns);
	if (!e)
		return;
	e->denied = deny;
	e->ino = BPF_CORE_READ(inode, i_ino);
	if (bpf_probe_read_kernel_str(e->name, sizeof(e->name), n) < 0)
		e->name[0] = 0;
	const unsigned char *pn = BPF_CORE_READ(d, d_parent, d_name.name);
	if (!pn || bpf_probe_read_kernel_str(e->dir, sizeof(e->dir), pn) < 0)
		e->dir[0] = 0;
	bpf_ringbuf_submit(e, 0);
}

struct mmap_args { __u64 common; __s32 nr; __u32 pad; __u64 addr; __u64 len; __u64 prot; __u64 flags; __u64 fd; __u64 off; };

/* At the mmap call's entry, the file its fd names. The kernel's own lookup follows, with nothing in
 * between that this thread does; another thread replacing the fd meanwhile (dup2) is the race left. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int mmap_exec(struct mmap_args *ctx)
{
	if (!(ctx->prot & PROT_EXEC) || (ctx->flags & MAP_ANONYMOUS) || ctx->fd > 0x7fffffff)
		return 0;
	struct task_struct *t = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (ctx->fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[ctx->fd]) < 0)
		return 0;
	mapped(file);
	return 0;
}
