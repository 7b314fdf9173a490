/* Shared by the BPF program (ortprof.bpf.c) and its loader (loader.c): the ring buffer's
 * record and the maps' keys and values. The kinds and marks are those of the bpftrace
 * program (signals/sched/bpf.py, signals/futex/bpf.py): both write the same lines. */
#ifndef ORTPROF_BPF_H
#define ORTPROF_BPF_H

#define KIND_PREEMPTED 0
#define KIND_THROTTLED 1
#define KIND_FUTEX 2
#define KIND_OTHER 3
#define KIND_DEAD 4
#define KIND_NEW 5
#define KIND_BITS 4

#define WINDOW_MARK 0x4F5254    /* getpriority(which=WINDOW_MARK, who=1 open / 0 close) */
#define TARGET_MARK (WINDOW_MARK + 1)
#define MAX_CPUS 1024

enum record_type { RECORD_EPISODE = 1, RECORD_HOLDER = 2, RECORD_PERIOD = 3 };

/* One ring-buffer record. EPISODE (a line "S"): thread tid off CPU from out_ns (kind),
 * woken at wake_ns by `other` onto wake_cpu, back on cpu at in_ns. HOLDER ("H"): thread tid of
 * process `other` held cpu from out_ns to in_ns while one of ours waited for it. PERIOD ("P"):
 * the cgroup's CFS period or slack timer fired at in_ns. */
struct ortprof_record {
	unsigned char type;
	unsigned char kind;
	unsigned short pad;
	int cpu;
	unsigned int tid;
	unsigned int other;
	int wake_cpu;
	unsigned int pad2;
	unsigned long long out_ns;
	unsigned long long wake_ns;
	unsigned long long in_ns;
	char comm[16];
};

/* An off-CPU episode still open: @out (ns << KIND_BITS | kind), @wake_ns, @waker, @wcpu. */
struct ortprof_episode {
	unsigned long long out;
	unsigned long long wake_ns;
	unsigned int waker;
	unsigned int wcpu;      /* the CPU waited for + 1; 0: not waiting for one */
};

struct ortprof_futex_key {
	unsigned int tid;
	unsigned int wait;      /* 1: a wait (blocks), 0: any other futex op */
};

struct ortprof_futex_stats {
	unsigned long long count;
	unsigned long long total;
};

#endif
