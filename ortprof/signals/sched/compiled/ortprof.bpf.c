// SPDX-License-Identifier: GPL-2.0
/* ortprof's compiled BPF program: futex counts and the scheduler's view of one process,
 * the logic of the bpftrace program (signals/futex/bpf.py, signals/sched/bpf.py) without its
 * per-event output: records go to a ring buffer the loader (loader.c) drains a few times a
 * second, with no wake-up per record. BTF tracepoints (tp_btf) attach without tracefs.
 *
 * target: the recorded process (tgid) in its low 32 bits, bit 32 while the window is open;
 * the recorder names it and marks the window by getpriority() calls with a `which` no
 * program uses (WINDOW_MARK, TARGET_MARK). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ortprof.bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile unsigned int recorder_tgid = 0;   /* who may mark (set by the loader) */
const volatile long nr_futex = -1;
const volatile long nr_getpriority = -1;

unsigned long long target = 0;
unsigned long long window_open_ns = 0;
unsigned long long window_close_ns = 0;
unsigned long long throttled_group = 0;           /* the task_group seen throttled (@tg) */
unsigned long long lost_records = 0;
unsigned int waiters[MAX_CPUS];                   /* our threads waiting for each CPU */
unsigned long long segment_ns[MAX_CPUS];          /* since when the CPU's current thread held it */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} futex_start SEC(".maps");        /* @start: entry ns << 2 | entered in the window << 1 | wait */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ortprof_futex_key);
	__type(value, struct ortprof_futex_stats);
} futex_calls SEC(".maps");        /* @t: calls entered inside the window, count and total ns */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ortprof_futex_key);
	__type(value, unsigned long long);
} futex_before SEC(".maps");       /* @before: time inside the window of calls entered before */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, unsigned int);
	__type(value, struct ortprof_episode);
} episodes SEC(".maps");           /* off-CPU episodes of our threads, until back on a CPU */

static __always_inline unsigned int target_tgid(void) { return (unsigned int)target; }
static __always_inline int window_open(void) { return (target >> 32) != 0; }

static __always_inline void emit(struct ortprof_record *value)
{
	struct ortprof_record *slot = bpf_ringbuf_reserve(&records, sizeof(*slot), 0);
	if (!slot) {
		__sync_fetch_and_add(&lost_records, 1);
		return;
	}
	__builtin_memcpy(slot, value, sizeof(*slot));
	bpf_ringbuf_submit(slot, BPF_RB_NO_WAKEUP);    /* the loader polls: no wake-up per record */
}

/* ---- marks and futex calls ---- */

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	unsigned long long pid_tgid = bpf_get_current_pid_tgid();
	unsigned int tgid = pid_tgid >> 32, tid = (unsigned int)pid_tgid;

	if (id == nr_futex) {
		unsigned long long current = target;
		if ((unsigned int)current != tgid || tgid == 0)
			return 0;
		int op = PT_REGS_PARM2_CORE_SYSCALL(regs) & 0x7f;
		/* FUTEX_WAIT, WAIT_BITSET, LOCK_PI, WAIT_REQUEUE_PI (as futex/bpf.py) */
		unsigned long long wait = (op == 0 || op == 9 || op == 6 || op == 11);
		unsigned long long packed = (bpf_ktime_get_ns() << 2) | ((current >> 32) << 1) | wait;
		bpf_map_update_elem(&futex_start, &tid, &packed, BPF_ANY);
	} else if (id == nr_getpriority && tgid == recorder_tgid) {
		long which = PT_REGS_PARM1_CORE_SYSCALL(regs);
		long who = PT_REGS_PARM2_CORE_SYSCALL(regs);
		if (which == WINDOW_MARK) {
			if (who == 1) {
				window_open_ns = bpf_ktime_get_ns();
				window_close_ns = 0;
				target = (target & 0xffffffffULL) | (1ULL << 32);
			} else {
				window_close_ns = bpf_ktime_get_ns();
				target = 0;
			}
		} else if (which == TARGET_MARK) {
			target = (unsigned int)who;
		}
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	unsigned long long pid_tgid = bpf_get_current_pid_tgid();
	unsigned long long current = target;
	unsigned int tgid = pid_tgid >> 32, tid = (unsigned int)pid_tgid;

	if ((unsigned int)current != tgid || tgid == 0)
		return 0;
	/* any syscall's exit: only a futex call leaves an entry (deleted here, at its exit) */
	unsigned long long *entered = bpf_map_lookup_elem(&futex_start, &tid);
	if (!entered)
		return 0;
	unsigned long long start = *entered, now = bpf_ktime_get_ns();
	struct ortprof_futex_key key = {.tid = tid, .wait = start & 1};
	if (start & 2) {
		struct ortprof_futex_stats *stats = bpf_map_lookup_elem(&futex_calls, &key);
		if (stats) {
			__sync_fetch_and_add(&stats->count, 1);
			__sync_fetch_and_add(&stats->total, now - (start >> 2));
		} else {
			struct ortprof_futex_stats first = {1, now - (start >> 2)};
			bpf_map_update_elem(&futex_calls, &key, &first, BPF_NOEXIST);
		}
	} else if (current >> 32) {
		unsigned long long inside = now - window_open_ns;
		unsigned long long *sum = bpf_map_lookup_elem(&futex_before, &key);
		if (sum)
			__sync_fetch_and_add(sum, inside);
		else
			bpf_map_update_elem(&futex_before, &key, &inside, BPF_NOEXIST);
	}
	bpf_map_delete_elem(&futex_start, &tid);
	return 0;
}

/* ---- the scheduler ---- */

static __always_inline void wait_for(unsigned int cpu, unsigned long long now)
{
	if (cpu >= MAX_CPUS)
		return;
	if (waiters[cpu] == 0)
		segment_ns[cpu] = now;
	waiters[cpu] += 1;
}

static __always_inline void stop_waiting(unsigned int wcpu)
{
	if (wcpu != 0 && wcpu - 1 < MAX_CPUS && waiters[wcpu - 1] > 0)
		waiters[wcpu - 1] -= 1;
}

struct task_struct___cpu_in_task { unsigned int cpu; } __attribute__((preserve_access_index));

static __always_inline unsigned int task_cpu(struct task_struct *task)
{
	if (bpf_core_field_exists(task->thread_info.cpu))
		return BPF_CORE_READ(task, thread_info.cpu);
	return BPF_CORE_READ((struct task_struct___cpu_in_task *)task, cpu);
}

/* TASK_INTERRUPTIBLE .. TASK_PARKED of prev_state | exit_state: the bits the tracepoint reports */
#define TASK_REPORT_BITS 0x7f
#define DEAD_BITS 0x30          /* EXIT_DEAD, EXIT_ZOMBIE */

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	unsigned long long current = target;
	unsigned int tgid = (unsigned int)current;
	if (tgid == 0)
		return 0;
	unsigned int cpu = bpf_get_smp_processor_id();
	if (cpu >= MAX_CPUS)
		return 0;
	unsigned long long now = bpf_ktime_get_ns();
	int open = (current >> 32) != 0;
	unsigned int prev_tgid = BPF_CORE_READ(prev, tgid), prev_tid = BPF_CORE_READ(prev, pid);

	if (waiters[cpu] > 0) {
		if (prev_tgid != tgid && prev_tid != 0 && open) {
			struct ortprof_record held = {.type = RECORD_HOLDER, .cpu = cpu, .tid = prev_tid, .other = prev_tgid,
					      .out_ns = segment_ns[cpu], .in_ns = now};
			BPF_CORE_READ_STR_INTO(&held.comm, prev, comm);
			emit(&held);
		}
		segment_ns[cpu] = now;
	}
	if (prev_tgid == tgid) {
		struct ortprof_episode episode = {};
		unsigned int kind;
		unsigned int state = preempt ? 0 : ((prev_state | BPF_CORE_READ(prev, exit_state)) & TASK_REPORT_BITS);
		if (state == 0) {
			if (BPF_CORE_READ(prev, se.cfs_rq, throttle_count) > 0) {
				kind = KIND_THROTTLED;
				throttled_group = (unsigned long long)BPF_CORE_READ(prev, se.cfs_rq, tg);
			} else {
				kind = KIND_PREEMPTED;
				wait_for(cpu, now);
				episode.wcpu = cpu + 1;
			}
		} else if (state & DEAD_BITS) {
			kind = KIND_DEAD;
		} else {
			unsigned long long *call = bpf_map_lookup_elem(&futex_start, &prev_tid);
			kind = (call && (*call & 1)) ? KIND_FUTEX : KIND_OTHER;
		}
		episode.out = (now << KIND_BITS) | kind;
		bpf_map_update_elem(&episodes, &prev_tid, &episode, BPF_ANY);
	}
	unsigned int next_tid = BPF_CORE_READ(next, pid);
	if (BPF_CORE_READ(next, tgid) == tgid) {
		struct ortprof_episode *episode = bpf_map_lookup_elem(&episodes, &next_tid);
		if (episode) {
			stop_waiting(episode->wcpu);
			if (open) {
				struct ortprof_record back = {.type = RECORD_EPISODE, .kind = episode->out & ((1 << KIND_BITS) - 1),
						      .cpu = cpu, .tid = next_tid, .other = episode->waker,
						      .wake_cpu = (int)episode->wcpu - 1, .out_ns = episode->out >> KIND_BITS,
						      .wake_ns = episode->wake_ns, .in_ns = now};
				BPF_CORE_READ_STR_INTO(&back.comm, next, comm);
				emit(&back);
			}
			bpf_map_delete_elem(&episodes, &next_tid);
		}
	}
	if (next_tid == 0)
		waiters[cpu] = 0;
	return 0;
}

SEC("tp_btf/sched_waking")
int BPF_PROG(on_waking, struct task_struct *task)
{
	unsigned int tgid = (unsigned int)target;
	if (tgid == 0 || BPF_CORE_READ(task, tgid) != tgid)
		return 0;
	unsigned int tid = BPF_CORE_READ(task, pid);
	struct ortprof_episode *episode = bpf_map_lookup_elem(&episodes, &tid);
	if (episode && episode->wake_ns == 0) {
		episode->wake_ns = bpf_ktime_get_ns();
		episode->waker = (unsigned int)bpf_get_current_pid_tgid();
	}
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *task)
{
	unsigned int tgid = (unsigned int)target;
	if (tgid == 0 || BPF_CORE_READ(task, tgid) != tgid)
		return 0;
	unsigned int tid = BPF_CORE_READ(task, pid);
	struct ortprof_episode *episode = bpf_map_lookup_elem(&episodes, &tid);
	if (episode && episode->wcpu == 0) {
		unsigned int cpu = task_cpu(task);
		wait_for(cpu, bpf_ktime_get_ns());
		episode->wcpu = cpu + 1;
	}
	return 0;
}

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(on_migrate, struct task_struct *task, int dest_cpu)
{
	unsigned int tgid = (unsigned int)target;
	if (tgid == 0 || BPF_CORE_READ(task, tgid) != tgid)
		return 0;
	unsigned int tid = BPF_CORE_READ(task, pid);
	struct ortprof_episode *episode = bpf_map_lookup_elem(&episodes, &tid);
	if (episode && episode->wcpu != 0) {
		stop_waiting(episode->wcpu);
		wait_for(dest_cpu, bpf_ktime_get_ns());
		episode->wcpu = dest_cpu + 1;
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	unsigned int tgid = (unsigned int)target;
	if (tgid == 0 || BPF_CORE_READ(child, tgid) != tgid)
		return 0;     /* a new thread of ours (a child process is not followed) */
	unsigned int tid = BPF_CORE_READ(child, pid);
	struct ortprof_episode episode = {.out = (bpf_ktime_get_ns() << KIND_BITS) | KIND_NEW};
	bpf_map_update_elem(&episodes, &tid, &episode, BPF_ANY);
	return 0;
}

/* The throttled group's CFS period timer (its quota refilled) or slack timer (runtime idle
 * CPUs gave back, handed on): throttled stretches end there. */
SEC("tp_btf/hrtimer_expire_entry")
int BPF_PROG(on_hrtimer, struct hrtimer *timer, ktime_t *now)
{
	struct task_group *group = (struct task_group *)throttled_group;
	if (!group || !window_open())
		return 0;
	if ((void *)timer == (void *)&group->cfs_bandwidth.period_timer ||
	    (void *)timer == (void *)&group->cfs_bandwidth.slack_timer) {
		struct ortprof_record fired = {.type = RECORD_PERIOD, .in_ns = bpf_ktime_get_ns()};
		emit(&fired);
	}
	return 0;
}
