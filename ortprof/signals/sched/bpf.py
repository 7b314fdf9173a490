"""The scheduler part of the recording's bpftrace program (futex/bpf.py composes and runs it).

It shares the futex part's @target (the recorded process in the low 32 bits, bit 32
while the window is open) and @start (the futex call each thread is in: bit 0 set for a
wait), so a thread that leaves the CPU inside a futex wait is told from one that
sleeps for any other reason without probes of its own.

One line per off-CPU episode of the process's threads, printed when the thread is back
on a CPU (the kernel keeps the episode in maps until then), and one line per stretch
another thread held a CPU one of them waited for:

  S tid out_ns kind wake_ns waker wake_cpu in_ns in_cpu comm   off CPU from out_ns (kind
       below), woken at wake_ns by thread `waker` onto wake_cpu (0 0 -1: not woken,
       preempted or throttled), on CPU `in_cpu` again at in_ns
  H cpu pid tid from_ns to_ns comm    thread tid of process pid had `cpu` from from_ns to
       to_ns while a thread of ours waited for it (idle is not a holder)
  P ns                                the cgroup's CFS period timer (its quota refilled) or slack
                                      timer (runtime idle CPUs gave back, handed on) fired

Episodes still open when the window closes stay in @out/@wake_ns/@waker/@wcpu, printed
when bpftrace exits. Everything before the window only keeps the maps current: nothing
is printed for it.

Cost: the programs run on every context switch and wake-up of the machine (a map lookup
each), and print about one line per context switch of the recorded process (~1000 a
second with spinning off); see docs/benchmarks.md.
"""

KIND_PREEMPTED, KIND_THROTTLED, KIND_FUTEX, KIND_OTHER, KIND_DEAD, KIND_NEW = range(6)
KIND_BITS = 4

# prev_state of sched_switch (the kernel's TASK_REPORT bits): 0 or 0x100 (preempted)
# means still runnable; 0x10 / 0x20 (EXIT_DEAD / EXIT_ZOMBIE) an exiting thread.
DEAD_STATES = 0x30

# `throttle_count` of the thread's CFS runqueue is non-zero while it or an ancestor group
# is throttled, in both throttling models (the whole runqueue dequeued, before Linux 6.18;
# each task dequeued on its way back to user space, since).
PART = """\
tracepoint:sched:sched_switch {
  $target = (uint64)@target;
  $tgid = $target & 0xffffffff;
  if ($tgid != 0) {
    $cpu = (uint64)cpu;
    if (@waiters[$cpu] > 0) {
      if (pid != $tgid && args->prev_pid != 0 && ($target >> 32)) {
        printf("H %d %d %d %llu %llu %s\\n", $cpu, pid, args->prev_pid, @seg[$cpu], nsecs, args->prev_comm);
      }
      @seg[$cpu] = nsecs;
    }
    if (pid == $tgid) {
      $state = args->prev_state & 0xff;
      if ($state == 0) {
        $kind = curtask->se.cfs_rq->throttle_count > 0 ? <THROTTLED> : <PREEMPTED>;
        if ($kind == <THROTTLED>) {
          @tg = (uint64)curtask->se.cfs_rq->tg;
        } else {
          if (@waiters[$cpu] == 0) { @seg[$cpu] = nsecs; }
          @waiters[$cpu] = @waiters[$cpu] + 1;
          @wcpu[tid] = $cpu + 1;
        }
      } else if ($state & <DEAD_STATES>) {
        $kind = <DEAD>;
      } else {
        $kind = (@start[tid] & 1) ? <FUTEX> : <OTHER>;
      }
      @out[tid] = (nsecs << <BITS>) | $kind;
    }
    $out = @out[args->next_pid];
    if ($out != 0) {
      $next = args->next_pid;
      $waited = @wcpu[$next];
      if ($waited != 0 && @waiters[$waited - 1] > 0) { @waiters[$waited - 1] = @waiters[$waited - 1] - 1; }
      if ($target >> 32) {
        printf("S %d %llu %d %llu %d %d %llu %d %s\\n", $next, $out >> <BITS>, $out & <MASK>, @wake_ns[$next],
               @waker[$next], (int64)$waited - 1, nsecs, $cpu, args->next_comm);
      }
      delete(@out[$next]); delete(@wake_ns[$next]); delete(@waker[$next]); delete(@wcpu[$next]);
    }
    if (args->next_pid == 0) { @waiters[$cpu] = 0; }
  }
}
tracepoint:sched:sched_waking {
  if (@out[args->pid] != 0 && @wake_ns[args->pid] == 0) { @wake_ns[args->pid] = nsecs; @waker[args->pid] = tid; }
}
tracepoint:sched:sched_wakeup {
  if (@out[args->pid] != 0 && @wcpu[args->pid] == 0) {
    $cpu = (uint64)args->target_cpu;
    if (@waiters[$cpu] == 0) { @seg[$cpu] = nsecs; }
    @waiters[$cpu] = @waiters[$cpu] + 1;
    @wcpu[args->pid] = $cpu + 1;
  }
}
tracepoint:sched:sched_migrate_task {
  $waited = @wcpu[args->pid];
  if ($waited != 0 && @out[args->pid] != 0) {
    if (@waiters[$waited - 1] > 0) { @waiters[$waited - 1] = @waiters[$waited - 1] - 1; }
    $cpu = (uint64)args->dest_cpu;
    if (@waiters[$cpu] == 0) { @seg[$cpu] = nsecs; }
    @waiters[$cpu] = @waiters[$cpu] + 1;
    @wcpu[args->pid] = $cpu + 1;
  }
}
tracepoint:sched:sched_process_fork {
  if (pid == ((uint64)@target & 0xffffffff)) { @out[args->child_pid] = (nsecs << <BITS>) | <NEW>; }
}
"""


def _fill(text, **values):
    for name, value in values.items():
        text = text.replace(f"<{name.upper()}>", str(value))
    return text


PART = _fill(PART, throttled=KIND_THROTTLED, preempted=KIND_PREEMPTED, dead_states=DEAD_STATES, dead=KIND_DEAD,
             futex=KIND_FUTEX, other=KIND_OTHER, new=KIND_NEW, bits=KIND_BITS, mask=(1 << KIND_BITS) - 1)

# The group's CFS period timer, told from other groups' by its expiry time (the program
# cannot take the address of a member of the task group it read).
PERIOD_TIMER_PART = """\
tracepoint:timer:hrtimer_expire_entry /args->function == <FUNCTION> || args->function == <SLACK_FUNCTION>/ {
  $tg = (uint64)@tg;
  if ($tg != 0 && ((uint64)@target >> 32)) {
    $expires = ((struct hrtimer *)args->hrtimer)->node.expires;
    if ($expires == ((struct task_group *)$tg)->cfs_bandwidth.period_timer.node.expires ||
        $expires == ((struct task_group *)$tg)->cfs_bandwidth.slack_timer.node.expires) {
      printf("P %llu\\n", nsecs);
    }
  }
}
"""

PERIOD_TIMER_FUNCTION = "sched_cfs_period_timer"
SLACK_TIMER_FUNCTION = "sched_cfs_slack_timer"    # hands on the runtime a group's idle CPUs gave back


def kernel_symbol(name):
    """The address of kernel function `name` (/proc/kallsyms; 0 when hidden or absent)."""
    try:
        with open("/proc/kallsyms") as stream:
            for line in stream:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == name:
                    return int(fields[0], 16)
    except OSError:
        pass
    return 0


def script_part():
    """The scheduler probes, with the period timer's when the kernel shows where it is."""
    function = kernel_symbol(PERIOD_TIMER_FUNCTION)
    slack = kernel_symbol(SLACK_TIMER_FUNCTION) or function
    return PART + (_fill(PERIOD_TIMER_PART, function=hex(function), slack_function=hex(slack)) if function else "")
