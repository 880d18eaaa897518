// SPDX-License-Identifier: GPL-2.0
/* Executables that live only in memory, reported from the kernel for the cell defender's audits
 * (tracepoint programs: they observe, the kernel's vm.memfd_noexec refuses). Built by scripts/bootstrap
 * with clang, loaded by garrison/kernel/bpf.py through libbpf.
 * - memfd_create(MFD_EXEC) from a process of a watched container: where the defender set
 *   vm.memfd_noexec = 2 the kernel refuses it with nothing else to tell (only a kernel log line naming
 *   a cell-wide pid); here the container is known at the moment of the call (its mount namespace).
 * - a program executed from a memfd in a watched container (where the sysctl is not set: alert mode).
 * Watched containers: map `scopes`, key = the inode number of the container's mount namespace.
 * Kernel structures are declared with only the fields used, relocated against the running kernel's
 * BTF (CO-RE): no kernel headers are needed to build. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define MFD_EXEC 0x10U
enum { EV_MFD_EXEC = 1, EV_MEMFD_RUN = 2 };

struct qstr { union { struct { __u32 hash; __u32 len; }; __u64 hash_len; }; const unsigned char *name; }
    __attribute__((preserve_access_index));
struct dentry { struct qstr d_name; } __attribute__((preserve_access_index));
struct path { struct dentry *dentry; } __attribute__((preserve_access_index));
struct file { struct path f_path; } __attribute__((preserve_access_index));
struct mm_struct { struct file *exe_file; } __attribute__((preserve_access_index));
struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct mnt_namespace { struct ns_common ns; } __attribute__((preserve_access_index));
struct nsproxy { struct mnt_namespace *mnt_ns; } __attribute__((preserve_access_index));
struct task_struct { struct nsproxy *nsproxy; struct mm_struct *mm; } __attribute__((preserve_access_index));

struct memfd_create_args { __u64 common; __s32 nr; __u32 pad; __u64 uname; __u64 flags; };
struct event { __u32 kind; __u32 tgid; __u32 mntns; __u32 flags; char comm[16]; char name[64]; };

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4096); __type(key, __u32); __type(value, __u32); }
    scopes SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 18); } events SEC(".maps");

char LICENSE[] SEC("license") = "GPL";

static __always_inline __u32 watched(void)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	__u32 ns = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	return bpf_map_lookup_elem(&scopes, &ns) ? ns : 0;
}

static __always_inline struct event *reserve(__u32 kind, __u32 ns)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->kind = kind;
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	e->mntns = ns;
	e->flags = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->name[0] = 0;
	return e;
}

SEC("tracepoint/syscalls/sys_enter_memfd_create")
int memfd_create_exec(struct memfd_create_args *ctx)
{
	if (!(ctx->flags & MFD_EXEC))
		return 0;
	__u32 ns = watched();
	if (!ns)
		return 0;
	struct event *e = reserve(EV_MFD_EXEC, ns);
	if (!e)
		return 0;
	e->flags = (__u32)ctx->flags;
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
	char head[6] = {};
	if (!n || bpf_probe_read_kernel(head, sizeof(head), n) < 0)
		return 0;
	if (head[0] != 'm' || head[1] != 'e' || head[2] != 'm' || head[3] != 'f' || head[4] != 'd' || head[5] != ':')
		return 0;
	__u32 ns = watched();
	if (!ns)
		return 0;
	struct event *e = reserve(EV_MEMFD_RUN, ns);
	if (!e)
		return 0;
	if (bpf_probe_read_kernel_str(e->name, sizeof(e->name), n) < 0)
		e->name[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
