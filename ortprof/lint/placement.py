"""Execution-provider placement, read from ORT's own verbose session log.

With `log_severity_level = 0` ORT logs, while it creates a session, which
provider each node went to (session_state.cc, VerifyEachNodeIsAssignedToAnEp):

    ... [V:onnxruntime:, session_state.cc:1578 VerifyEachNodeIsAssignedToAnEp] Node placements
    ... [V:onnxruntime:, session_state.cc:1581 VerifyEachNodeIsAssignedToAnEp]  All nodes placed on [CPUExecutionProvider]. Number of nodes: 1

or, when more than one provider got nodes, one header per provider followed by
one `  OpType (NodeName)` record per node. Copy nodes inserted between devices
show up there as MemcpyFromHost / MemcpyToHost. The C++ logger writes to the
process's stderr, so the session is created in a child process whose stderr we
read (`python -m ortprof.lint.placement MODEL PROVIDERS`).
"""
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

from ..errors import InputError

CPU_PROVIDER = "CPUExecutionProvider"
MEMCPY_OPS = ("MemcpyFromHost", "MemcpyToHost")
PROBE_TIMEOUT_S = 900  # TensorRT may build engines for minutes

# "<date> <time> [V:onnxruntime:<logid>, <file>:<line> <function>] <message>"
_LOG_RECORD = re.compile(r"^[^\[]*\[(?P<severity>[VIWEF]):[^,\]]*, (?P<where>[^\]]*)\] (?P<message>.*)$")
_ALL_NODES = re.compile(r"^\s*All nodes placed on \[(?P<ep>[^\]]+)\]\.\s+Number of nodes: (?P<n>\d+)")
_SOME_NODES = re.compile(r"^\s*Node\(s\) placed on \[(?P<ep>[^\]]+)\]\.\s+Number of nodes: (?P<n>\d+)")
_NODE = re.compile(r"^\s+(?P<op>[^\s(]+) \((?P<name>.*)\)\s*$")
_FORCED_CPU = re.compile(r"Force fallback to CPU execution for node: (?P<name>.+?)(?: because |$)")
_NO_KERNEL = re.compile(r"(?P<ep>\w+) kernel not (?:found in registries|supported\. Fallback to CPU execution provider) "
                        r"for Op type: (?P<op>\S+) node name: (?P<name>.*)$")
_MEMCPY_ADDED = re.compile(r"Add (?P<op>MemcpyFromHost|MemcpyToHost) (?:after|before) (?P<tensor>\S+) for (?P<ep>\w+)")


@dataclass
class Placement:
    """What one session's verbose log says about node placement."""
    node_counts: dict = field(default_factory=dict)       # provider -> number of nodes
    nodes: dict = field(default_factory=dict)             # provider -> [(op, name)] (empty when "All nodes")
    forced_cpu: list = field(default_factory=list)        # node names ORT put on CPU on purpose
    missing_kernels: list = field(default_factory=list)   # (provider, op, node name)
    memcpy_added: list = field(default_factory=list)      # (op, tensor, provider)
    found: bool = False                                    # a "Node placements" report was seen

    def memcpy_nodes(self):
        """(provider, op, name) of the copy nodes; with a single provider there are none."""
        return [(ep, op, name) for ep, items in self.nodes.items() for op, name in items if op in MEMCPY_OPS]

    def to_json(self):
        return {
            "node_counts": self.node_counts,
            "nodes": {ep: [{"op": op, "name": name} for op, name in items] for ep, items in self.nodes.items()},
            "memcpy_nodes": len(self.memcpy_nodes()),
            "copied_tensors": [{"op": op, "tensor": tensor, "provider": ep} for op, tensor, ep in self.memcpy_added],
            "forced_cpu": self.forced_cpu,
            "missing_kernels": [{"provider": ep, "op": op, "node": name} for ep, op, name in self.missing_kernels],
        }


def placement_report(requested, parsed, session_providers):
    """The JSON section of a lint report for one probed session."""
    return {"requested": requested, "unavailable": [], "skipped": None,
            "session_providers": session_providers, **parsed.to_json()}


def _message(line):
    """The log message of an ORT log record; other lines (e.g. printed to stdout) as they are."""
    record = _LOG_RECORD.match(line)
    return record.group("message") if record else line


def parse_placement_log(text):
    """Placement from the text of an ORT verbose log (the last report wins)."""
    placement = Placement()
    current = None    # provider whose node list is being read
    remaining = 0
    for raw in text.splitlines():
        message = _message(raw.rstrip("\r\n"))
        if message.strip() == "Node placements":
            placement = Placement(found=True, forced_cpu=placement.forced_cpu,
                                  missing_kernels=placement.missing_kernels,
                                  memcpy_added=placement.memcpy_added)
            current, remaining = None, 0
            continue
        listed = _SOME_NODES.match(message)
        header = listed or _ALL_NODES.match(message)
        if header:
            provider, count = header.group("ep"), int(header.group("n"))
            placement.found = True
            placement.node_counts[provider] = count
            placement.nodes[provider] = []
            # only "Node(s) placed on" is followed by one record per node
            current, remaining = (provider, count) if listed else (None, 0)
            continue
        if remaining:
            node = _NODE.match(message)
            if node:
                placement.nodes[current].append((node.group("op"), node.group("name")))
                remaining -= 1
                continue
            current, remaining = None, 0
        forced = _FORCED_CPU.search(message)
        if forced:
            placement.forced_cpu.append(forced.group("name").strip())
            continue
        missing = _NO_KERNEL.search(message)
        if missing:
            placement.missing_kernels.append((missing.group("ep"), missing.group("op"), missing.group("name").strip()))
            continue
        memcpy = _MEMCPY_ADDED.search(message)
        if memcpy:
            placement.memcpy_added.append((memcpy.group("op"), memcpy.group("tensor"), memcpy.group("ep")))
    return placement


def resolve_providers(names):
    """(requested provider names in ORT spelling, the ones this onnxruntime lacks).

    Accepts ORT's names case-insensitively and short forms ("cuda" ->
    CUDAExecutionProvider); a name ORT has never heard of is an input error.
    """
    import onnxruntime as ort

    known = ort.get_all_providers()
    by_key = {}
    for name in known:
        by_key[name.lower()] = name
        by_key[name.lower().replace("executionprovider", "")] = name
    resolved = []
    for name in names:
        key = name.strip().lower()
        if not key:
            continue
        if key not in by_key:
            raise InputError(f"--providers: unknown execution provider {name.strip()!r}; "
                             f"onnxruntime knows: {', '.join(known)}")
        if by_key[key] not in resolved:
            resolved.append(by_key[key])
    if not resolved:
        raise InputError("--providers: no provider given")
    available = set(ort.get_available_providers())
    return resolved, [p for p in resolved if p not in available]


def probe_placement(model_path, providers, timeout=PROBE_TIMEOUT_S):
    """(Placement, providers the session really used, child stderr) for `model_path`."""
    command = [sys.executable, "-m", "ortprof.lint.placement", model_path, ",".join(providers)]
    # The child must import this package even when it is run from a source tree.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise InputError(f"placement check: creating the session with {', '.join(providers)} "
                         f"took more than {timeout} s") from None
    session = {}
    for line in reversed(child.stdout.splitlines()):
        if line.startswith("{"):
            session = json.loads(line)
            break
    if child.returncode != 0 or "error" in session:
        reason = session.get("error") or (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"placement check: {reason}")
    return parse_placement_log(child.stderr), session.get("providers", []), child.stderr


def _probe_main(argv):
    """Child side: create one verbose session and report the providers it ended up with."""
    model_path, providers = argv[0], argv[1].split(",")
    import onnxruntime as ort

    from .ort_messages import ort_load_error

    # Both loggers verbose: the session one reports placement, the default one
    # the per-node CPU fallbacks of the provider heuristics.
    ort.set_default_logger_severity(0)
    options = ort.SessionOptions()
    options.log_severity_level = 0
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(model_path, options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind exception types
        print(json.dumps({"error": ort_load_error(exc, model_path)}), flush=True)
        return 0
    print(json.dumps({"providers": session.get_providers()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
