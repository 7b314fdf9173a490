"""How long the rest of the compile takes: ninja's steps weighted by what they cost.

A count of steps cannot know that ORT's kernel sources and its final links cost
many times what the dependencies' small sources, compiled first, do: on a real
1.15.1 Debug build a linear ETA was 3-4x too optimistic for most of the half
hour. Here each step ninja will run gets a cost:

- from ninja's own `.ninja_log` of an earlier build of the same tree (the build
  directory's, or the copy ortprof kept of its last complete build of that
  version and config): the step's share of that build's wall time, so steps
  that ran alone (the final links) count fully and those that ran beside
  others count in part;
- otherwise from its kind (an operator kernel source, another ORT source, a
  dependency's source, a link...), with weights set from how a Debug compile
  behaves, not fitted to any log. That estimate is shown as a range.

The steps still to run are those build.ninja's default targets need that this
run has not finished; cost done per second of this run gives the rate. With
no build.ninja, or a step count that fits neither a full nor a resumed build,
the ETA is "unknown" rather than a guess.
"""
import bisect
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

# Relative cost of one step of each kind in a Debug (-O0 -g) build, about seconds on one core.
# Set from how such builds behave (template-heavy kernels and pybind11 code compile slowest,
# a Debug shared library of hundreds of MB links slowly, `ar` is quick), not from a measured log.
KIND_WEIGHTS = {
    "kernel-source": 10.0,       # onnxruntime/core/providers, contrib_ops: kernels instantiated per type
    "binding-source": 10.0,      # onnxruntime/python: pybind11 templates
    "ort-source": 6.0,           # ORT's framework, graph, optimizer, session...
    "mlas-source": 3.0,          # MLAS's C++: loops and intrinsics, few templates
    "dependency-source": 2.0,    # abseil, protobuf, onnx, re2...: smaller translation units
    "c-or-asm-source": 0.5,
    "shared-link": 20.0,
    "executable-link": 3.0,
    "static-library": 0.5,       # ar
    "other": 0.2,                # code generators, symlinks, copies
}
# A shared library's link waits for all it links and what follows waits for it: little runs
# beside it, so it holds up all the parallel jobs for its duration.
SERIAL_KINDS = frozenset({"shared-link"})

# The by-kind estimate is shown as a range around its point estimate. The weights above are
# guesses; later steps of an ORT build are the heavy ones, and a serial tail or a busier
# machine only lengthens the rest, so the range reaches further up than down.
KIND_RANGE = (0.8, 1.5)

MIN_STEPS = 10           # steps finished in this run before a rate means anything
MIN_SECONDS = 20.0       # ... and seconds of it
PLAN_TOLERANCE = 0.05    # how far ninja's step count may differ from the planned steps
REFERENCE_SHARE = 0.9    # the rest's cost must come this much from an earlier build to give one number

_DESCRIPTION = re.compile(
    r"^(?:Building (?P<language>\w+) object|Linking \w+ (?P<link>static library|shared library|shared module|"
    r"executable)|Creating \w+ symlink)\s+(?P<output>.+?)\s*$")
_RULE_COMPILER = re.compile(r"^(?P<language>[A-Z]+\w*?)_COMPILER__")
_RULE_LINK = (("STATIC_LIBRARY_LINKER", "static-library"), ("SHARED_LIBRARY_LINKER", "shared-link"),
              ("MODULE_LIBRARY_LINKER", "shared-link"), ("EXECUTABLE_LINKER", "executable-link"))
_LINK_KINDS = {"static library": "static-library", "shared library": "shared-link",
               "shared module": "shared-link", "executable": "executable-link"}


def source_kind(language, output):
    """The kind of a compile step from its language and object path."""
    if language != "CXX":
        return "c-or-asm-source"
    path = output.replace("\\", "/")
    if path.startswith("_deps/") or "/_deps/" in path:
        return "dependency-source"
    if "onnxruntime/core/mlas/" in path:
        return "mlas-source"
    if "onnxruntime/core/providers/" in path or "onnxruntime/contrib_ops/" in path:
        return "kernel-source"
    if "onnxruntime/python/" in path:
        return "binding-source"
    if "onnxruntime/" in path:
        return "ort-source"
    return "dependency-source"


def describe_step(description):
    """(kind, output) of a ninja status line's description; output is None when it names none
    (a custom command's own words)."""
    match = _DESCRIPTION.match(description)
    if match is None:
        return "other", None
    if match.group("language"):
        return source_kind(match.group("language"), match.group("output")), match.group("output")
    if match.group("link"):
        return _LINK_KINDS[match.group("link")], match.group("output")
    return "other", match.group("output")


def rule_kind(rule, output):
    """The kind of a build.ninja edge from its (CMake-generated) rule name."""
    compiler = _RULE_COMPILER.match(rule)
    if compiler:
        return source_kind(compiler.group("language"), output)
    return next((kind for marker, kind in _RULE_LINK if marker in rule), "other")


@dataclass(frozen=True)
class PlannedStep:
    """One edge ninja runs: its outputs (the first is what its status line names) and kind."""
    outputs: Tuple[str, ...]
    kind: str

    @property
    def output(self):
        return self.outputs[0]


# --- build.ninja: the steps the default targets need ---------------------------------------

def _tokens(text):
    """Paths of a build line, unescaped; an unescaped ':' is its own token."""
    if "$" not in text:
        return text.replace(":", " : ").split()
    tokens, current, index = [], [], 0
    while index < len(text):
        char = text[index]
        if char == "$" and index + 1 < len(text):
            current.append(text[index + 1])          # '$ ', '$:', '$$'
            index += 2
            continue
        if char in " :":
            if current:
                tokens.append("".join(current))
                current = []
            if char == ":":
                tokens.append(":")
        else:
            current.append(char)
        index += 1
    if current:
        tokens.append("".join(current))
    return tokens


def _logical_lines(path, seen):
    """The lines of a ninja file with '$' continuations joined, `include`/`subninja` followed."""
    path = Path(path)
    if path in seen or not path.is_file():
        return
    seen.add(path)
    pending = ""
    with open(path, errors="replace") as stream:
        for raw in stream:
            line = raw.rstrip("\n")
            if pending:
                line = pending + line.lstrip()
                pending = ""
            if line.endswith("$") and not line.endswith("$$"):
                pending = line[:-1]
                continue
            if line.startswith(("include ", "subninja ")):
                yield from _logical_lines(path.parent / line.split(None, 1)[1].strip(), seen)
                continue
            yield line


def read_build_plan(build_dir):
    """The steps ninja's default targets need, from <build_dir>/build.ninja; None without one."""
    build_file = Path(build_dir) / "build.ninja"
    if not build_file.is_file():
        return None
    producer, edges, defaults = {}, [], []
    for line in _logical_lines(build_file, set()):
        if line.startswith("build "):
            tokens = _tokens(line[len("build "):])
            if ":" not in tokens:
                continue
            colon = tokens.index(":")
            outputs = [token for token in tokens[:colon] if token != "|"]
            rule, inputs = (tokens[colon + 1], tokens[colon + 2:]) if len(tokens) > colon + 1 else ("phony", [])
            edge = (tuple(outputs), rule, [token for token in inputs if token not in ("|", "||", "|@")])
            for output in outputs:
                producer[output] = len(edges)
            edges.append(edge)
        elif line.startswith("default "):
            defaults += _tokens(line[len("default "):])
    if not defaults:         # ninja builds every root when no default is named
        used = {name for _, _, inputs in edges for name in inputs}
        defaults = [output for outputs, _, _ in edges for output in outputs if output not in used]
    steps, visited, stack = [], set(), [producer[name] for name in defaults if name in producer]
    while stack:
        index = stack.pop()
        if index in visited:
            continue
        visited.add(index)
        outputs, rule, inputs = edges[index]
        if rule != "phony":
            steps.append(PlannedStep(outputs, rule_kind(rule, outputs[0])))
        stack.extend(producer[name] for name in inputs if name in producer)
    return steps


# --- .ninja_log: what each step cost in an earlier build -----------------------------------

def read_ninja_log(path):
    """{output: seconds} from a .ninja_log: each step's share of its build's wall time.

    The log holds every run's steps (start and end in ms from that run's start), appended
    as they finish; a run starts where the end times go back. At each moment a run's wall
    time is shared by the steps running then, so a step that ran alone counts fully. An
    output built in several runs keeps its latest cost. Empty for a missing or unreadable log.
    """
    runs, run, last_end = [], [], None
    try:
        with open(path, errors="replace") as stream:
            for line in stream:
                fields = line.rstrip("\n").split("\t")
                if line.startswith("#") or len(fields) < 4:
                    continue
                try:
                    start, end = int(fields[0]), int(fields[1])
                except ValueError:
                    continue
                if last_end is not None and end < last_end:
                    runs.append(run)
                    run = []
                last_end = end
                run.append((start, end, fields[4] if len(fields) > 4 else "", fields[3]))
    except OSError:
        return {}
    runs.append(run)
    costs = {}
    for run in runs:
        costs.update(_wall_shares(run))
    return costs


def _wall_shares(run):
    edges = defaultdict(list)                     # one edge per (start, end, command hash)
    for start, end, command, output in run:
        edges[(start, end, command)].append(output)
    if not edges:
        return {}
    times = sorted({time for start, end, _ in edges for time in (start, end)})
    running = [0] * len(times)
    for start, end, _ in edges:
        running[bisect.bisect_left(times, start)] += 1
        running[bisect.bisect_left(times, end)] -= 1
    shared, active = [0.0], 0                      # wall time per running step, cumulated
    for index in range(len(times) - 1):
        active += running[index]
        shared.append(shared[-1] + ((times[index + 1] - times[index]) / active if active else 0.0))
    costs = {}
    for (start, end, _), outputs in edges.items():
        seconds = (shared[bisect.bisect_left(times, end)] - shared[bisect.bisect_left(times, start)]) / 1000
        for output in outputs:
            costs[output] = seconds
    return costs


# --- the estimate ---------------------------------------------------------------------------

@dataclass
class Estimate:
    """Seconds left: one number (low == high), a range around the model's `point`, or unknown
    (None) with the reason."""
    low: Optional[float]
    high: Optional[float] = None
    point: Optional[float] = None
    reason: str = ""

    @property
    def known(self):
        return self.low is not None

    def text(self):
        if self.low is None:
            return "unknown"
        if self.high is None or self.high == self.low:
            return format_duration(self.low)
        low, high = _minutes(self.low), _minutes(self.high)
        if high <= 1:
            return "under 1m"
        return f"{low}m-{high}m" if low < high else f"about {high}m"


def format_duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _minutes(seconds):
    return max(1, int(round(seconds / 60)))


class CompileEta:
    """The ETA of one ninja run, fed its finished steps in order.

    `read_plan()`: the steps build.ninja's default targets need, or None (read when ninja's
    count starts or changes, as CMake may just have rewritten build.ninja). `costs`: seconds
    per output from an earlier build's .ninja_log. `built_before`: outputs the build
    directory's own log says were built already (a resumed build runs only the others).
    `jobs`: parallel jobs.
    """

    def __init__(self, read_plan=lambda: None, costs=None, built_before=(), jobs=1, clock=time.monotonic):
        self.clock = clock
        self.read_plan = read_plan
        self.costs = costs or {}
        self.built_before = set(built_before)
        self.jobs = max(1, jobs)
        self.total = None
        self._remaining = None            # output -> cost of each planned step not finished yet
        self._remaining_cost = 0.0
        self._by_kind = {}                # kind -> outputs of its planned steps
        self._kind_scale = 1.0            # kind weights -> seconds of the earlier build
        self._start = None                # (time, cost done) when this run's rate starts
        self._done_cost = 0.0
        self._steps = 0
        self._last_done = None
        self.source = None                # "ninja-log" | "step-kind" | None: no estimate
        self.unknown_because = None       # why not, in words

    def kind_cost(self, kind):
        weight = KIND_WEIGHTS.get(kind, KIND_WEIGHTS["other"])
        return weight * self.jobs if kind in SERIAL_KINDS else weight

    def earlier_cost(self, step):
        """Seconds the step took in the earlier build, or None."""
        return next((self.costs[output] for output in step.outputs if output in self.costs), None)

    def _begin(self, total):
        """Choose what ninja's `total` steps are: all planned steps (a fresh or full build) or
        those not built before (a resumed one)."""
        self.total = total
        self._remaining, self.source = None, None
        self._done_cost, self._steps = 0.0, 0
        self._start = None
        self._kind_scale = 1.0
        plan = self.read_plan()
        if plan is None:
            self.unknown_because = "no build.ninja to tell which steps are left"
            return
        unbuilt = [step for step in plan if not any(output in self.built_before for output in step.outputs)]
        chosen = min((plan, unbuilt), key=lambda steps: abs(len(steps) - total))
        if not _fits(len(chosen), total):
            self.unknown_because = (f"ninja runs {total} steps; build.ninja has {len(plan)}, {len(unbuilt)} of "
                                    f"them not built before: which {total} is unclear")
            return
        self.unknown_because = None
        earlier = [self.earlier_cost(step) for step in chosen]
        timed_kinds = sum(self.kind_cost(step.kind) for step, cost in zip(chosen, earlier) if cost is not None)
        timed_cost = sum(cost for cost in earlier if cost is not None)
        if timed_kinds and timed_cost:
            self._kind_scale = timed_cost / timed_kinds     # kind weights in the earlier build's seconds
        costs = [cost if cost is not None else self.kind_cost(step.kind) * self._kind_scale
                 for step, cost in zip(chosen, earlier)]
        self._remaining = {step.output: cost for step, cost in zip(chosen, costs)}
        self._remaining_cost = sum(costs)
        self._by_kind = defaultdict(list)
        for step in chosen:
            self._by_kind[step.kind].append(step.output)
        self.source = ("ninja-log" if self._remaining_cost and timed_cost >= REFERENCE_SHARE * self._remaining_cost
                       else "step-kind")

    def update(self, done, total, description=""):
        """A finished step ([done/total] description); returns the Estimate for the rest."""
        now = self.clock()
        if total != self.total or (self._last_done is not None and done < self._last_done):
            self._begin(total)        # ninja re-ran CMake and now counts the real build, or a new run
        self._last_done = done
        if self._remaining is None:
            return Estimate(None, reason=self.unknown_because)
        self._done_cost += self._finish(description)
        self._steps += 1
        if self._start is None:
            # the first step's time before its line is unknown: the rate starts after it
            self._start = (now, self._done_cost)
            return Estimate(None, reason="just started")
        seconds, cost = now - self._start[0], self._done_cost - self._start[1]
        if self._steps <= MIN_STEPS or seconds < MIN_SECONDS or cost <= 0:
            return Estimate(None, reason="too early to tell")
        left = max(0, total - done)
        remaining_cost = self._remaining_cost
        if self._remaining and len(self._remaining) != left:
            remaining_cost *= left / len(self._remaining)     # ninja knows better how many are left
        rest = remaining_cost / (cost / seconds)
        if self.source == "ninja-log":
            return Estimate(rest, rest, rest)
        return Estimate(rest * KIND_RANGE[0], rest * KIND_RANGE[1], rest)

    def _finish(self, description):
        """Take the finished step out of the remaining ones; returns its cost."""
        kind, output = describe_step(description)
        cost = self._remaining.pop(output, None) if output else None
        if cost is None:
            # a custom command's own words, or a step build.ninja did not list: one of its kind
            outputs = self._by_kind.get(kind, [])
            while outputs and cost is None:
                cost = self._remaining.pop(outputs.pop(), None)
        if cost is None:
            return self.kind_cost(kind) * self._kind_scale
        self._remaining_cost -= cost
        return cost


def _fits(count, total):
    return abs(count - total) <= max(2, PLAN_TOLERANCE * total)


def earlier_build(build_dir, kept_log=None):
    """(costs, built_before) for a build in `build_dir`: step costs from the .ninja_log ortprof
    kept of its last complete build of this version and config, overridden by the build
    directory's own (its latest runs); the outputs that one lists were built before."""
    own = read_ninja_log(Path(build_dir) / ".ninja_log")
    costs = read_ninja_log(kept_log) if kept_log else {}
    costs.update(own)
    return costs, set(own)
