"""Folded stacks for flamegraph.pl / inferno / speedscope: `root;...;leaf weight`, weight in ms.

`by` picks the root frame: "thread" (`role-tid`, the default), "role", or "process" (none).
"""
from collections import Counter
from dataclasses import dataclass

from .base import Exporter

BY_CHOICES = ("thread", "role", "process")


def folded_lines(profile, by="thread"):
    """Folded lines, heaviest first within each root; weights in ms (at least 1)."""
    weights = Counter()
    for tid, thread in sorted(profile.threads.items()):
        root = {"thread": f"{thread.role}-{tid}", "role": thread.role, "process": None}[by]
        for stack_id, ns in thread.ns_by_stack.items():
            folded = profile.display_folded(stack_id)
            weights[f"{root};{folded}" if root else folded] += ns
    for line, ns in sorted(weights.items(), key=lambda item: (item[0].split(";", 1)[0], -item[1])):
        yield f"{line} {max(1, round(ns / 1e6))}"


@dataclass(frozen=True)
class FoldedExporter(Exporter):
    by: str = "thread"

    def write(self, profile, report, stream):
        for line in folded_lines(profile, self.by):
            stream.write(line + "\n")


EXPORTER = FoldedExporter("folded", ".folded",
                          "folded stacks (flamegraph.pl, inferno, speedscope); --by process|role|thread")
