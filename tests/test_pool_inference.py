"""Pool workers of sessions whose creation ortprof did not see (an attach, the dispatcher probes):
tied to a session by computing during its runs only, marked inferred."""
from ortprof.analysis import roles
from ortprof.analysis.stacks import COMPUTE, SPIN
from ortprof.model.profile import Profile, RunSpan, StackInfo, ThreadSamples

EVIDENCE = roles.StackEvidence(thread_root="ort", python_frames=False, python_calls_ort=False, inter_op=False)
COMPUTE_STACK, SPIN_STACK = 0, 1


def _thread(tid, role, samples):
    """samples: [(monotonic s, stack id)]"""
    thread = ThreadSamples(tid, role=role)
    for time, stack in samples:
        thread.times.append(time)
        thread.stack_ids.append(stack)
        thread.weights_ns.append(1_000_000)
    return thread


def _profile(threads):
    # session 1 runs at 0.0-0.01, 0.1-0.11, ...; session 2 at 0.05-0.06, 0.15-0.16, ...
    runs = [RunSpan(1 + (i % 2), 100, i * 0.05, 0.01) for i in range(20)]
    return Profile(stacks=[StackInfo((), COMPUTE, EVIDENCE), StackInfo((), SPIN, EVIDENCE)],
                   threads={t.tid: t for t in threads}, runs=runs)


def _in_runs_of(session, stack, count):
    first = 0.0 if session == 1 else 0.05
    return [(first + 0.1 * i + 0.005, stack) for i in range(count)]


UNSEEN = [{"event": "session", "session": 1, "new_threads": None},
          {"event": "session", "session": 2, "new_threads": None}]


def test_a_worker_that_computes_during_one_sessions_runs_is_tied_to_it_inferred():
    worker_a = _thread(201, roles.INTRA_WORKER, _in_runs_of(1, COMPUTE_STACK, 6) + _in_runs_of(2, SPIN_STACK, 6))
    worker_b = _thread(202, roles.INTRA_WORKER, _in_runs_of(2, COMPUTE_STACK, 5))
    pools = roles.pools_by_runs_together(_profile([worker_a, worker_b]), UNSEEN, {})
    assert pools == {201: roles.PoolThread(201, 1, roles.INTRA_POOL, roles.RUNS_TOGETHER),
                     202: roles.PoolThread(202, 2, roles.INTRA_POOL, roles.RUNS_TOGETHER)}


def test_no_tie_for_mixed_or_thin_evidence_or_sessions_whose_creation_was_seen():
    mixed = _thread(201, roles.INTRA_WORKER, _in_runs_of(1, COMPUTE_STACK, 5) + _in_runs_of(2, COMPUTE_STACK, 5))
    thin = _thread(202, roles.INTRA_WORKER, _in_runs_of(1, COMPUTE_STACK, 2))
    caller = _thread(100, roles.CALLER, _in_runs_of(1, COMPUTE_STACK, 9))
    profile = _profile([mixed, thin, caller])
    assert roles.pools_by_runs_together(profile, UNSEEN, {}) == {}
    seen = [{"event": "session", "session": 1, "new_threads": [301]}, UNSEEN[1]]
    worker = _thread(203, roles.INTRA_WORKER, _in_runs_of(1, COMPUTE_STACK, 6))
    assert roles.pools_by_runs_together(_profile([worker]), seen, {}) == {}
    # a thread a creation already claimed keeps that tie
    claimed = {203: roles.PoolThread(203, 1, roles.INTRA_POOL, "session-creation")}
    assert roles.pools_by_runs_together(_profile([worker]), UNSEEN, claimed) == {}


def test_the_only_session_of_a_process_gets_its_spinning_workers():
    # a small model: the worker computes too little to be sampled inside runs, it mostly spins
    runs = [RunSpan(1, 100, i * 0.05, 0.01) for i in range(20)]
    worker = _thread(201, roles.INTRA_WORKER, [(0.02 + 0.05 * i, SPIN_STACK) for i in range(10)])
    profile = Profile(stacks=[StackInfo((), COMPUTE, EVIDENCE), StackInfo((), SPIN, EVIDENCE)],
                      threads={201: worker}, runs=runs)
    only = [{"event": "session", "session": 1, "new_threads": None}]
    assert roles.pools_by_runs_together(profile, only, {}) == {
        201: roles.PoolThread(201, 1, roles.INTRA_POOL, roles.RUNS_TOGETHER)}
    assert roles.pools_by_runs_together(profile, UNSEEN, {}) == {}     # a second session: no guess
