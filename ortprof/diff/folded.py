"""The folded diff: `stack before after`, the two-column format of flamegraph.pl's difffolded.pl
(`flamegraph.pl --negate` or plain flamegraph.pl colours it). Stacks are rooted at the thread's
role (thread ids differ between runs). Counts are CPU microseconds per inference when both runs
have run() records, so a run with more requests does not look hotter; else CPU milliseconds."""
from collections import Counter

from ..errors import InputError


def stack_weights(profile):
    """ns by `role;root;...;leaf`."""
    weights = Counter()
    for thread in profile.threads.values():
        for stack_id, ns in thread.ns_by_stack.items():
            weights[f"{thread.role};{profile.folded(stack_id)}"] += ns
    return weights


def folded_diff_lines(before, after):
    """Lines of the folded diff of two Sides, sorted by stack; stacks at 0 on both sides left out."""
    missing = [side.label for side in (before, after) if side.profile is None]
    if missing:
        raise InputError(f"--folded-diff needs run directories: {' and '.join(missing)} is a report JSON, "
                         "which keeps no stacks")
    per_inference = before.inferences and after.inferences

    def scaled(side):
        divisor = 1e3 * side.inferences if per_inference else 1e6
        return {stack: round(ns / divisor) for stack, ns in stack_weights(side.profile).items()}
    old, new = scaled(before), scaled(after)
    for stack in sorted(set(old) | set(new)):
        b, a = old.get(stack, 0), new.get(stack, 0)
        if b or a:
            yield f"{stack} {b} {a}"


def folded_unit(before, after):
    return "CPU µs per inference" if before.inferences and after.inferences else "CPU ms"
