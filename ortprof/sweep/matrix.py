"""The sweep matrix: axes of ORT settings (injected through the startup hook)
and of conditions (CPU quota, request rate), and the cells they span.

Cells that would run the same configuration twice are dropped: with one
intra-op thread ORT creates no intra-op pool, so spinning, spin duration and
block base change nothing; with spinning off the spin duration is moot.
"""
import itertools
import os
from dataclasses import dataclass
from typing import Optional

from ..errors import InputError


@dataclass(frozen=True)
class Axis:
    name: str                       # key in cell values and in sweep.json "axes"
    option: str                     # command-line flag
    label: str                      # short name in tables
    parse: callable                 # one list item (str) -> value
    ort_default: object = None      # what ORT does when nothing is set (None: see reference_values)
    config_key: Optional[str] = None  # session config entry the axis sets (must be known to ORT)
    condition: bool = False         # a condition of the measurement, not a setting injected into ORT


def _int_at_least(minimum, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{what}: {text!r} is not an integer")
        if value < minimum:
            raise InputError(f"{what}: {value} is below {minimum}")
        return value
    return parse


def _spinning(text):
    if text not in ("0", "1"):
        raise InputError(f"--allow-spinning: {text!r} must be 0 or 1")
    return text


def _inter_op(text):
    if text.lower() in ("seq", "sequential"):
        return "seq"
    return _int_at_least(1, "--inter-op")(text)


def _cpus(text):
    if text.lower() in ("none", "host", "unlimited"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--cpus: {text!r} is not a number of CPUs (like 0.5) or 'none'")
    if not value > 0:
        raise InputError(f"--cpus: {value:g} must be greater than 0")
    return value


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--rate: {text!r} is not a number of requests per second (0 = closed loop)")
    if value < 0:
        raise InputError(f"--rate: {value:g} must be 0 (closed loop) or more")
    return value


THREADS = Axis("threads", "--threads", "threads", _int_at_least(1, "--threads"))
SPINNING = Axis("allow_spinning", "--allow-spinning", "spinning", _spinning, "1",
                "session.intra_op.allow_spinning")
SPIN_DURATION = Axis("spin_duration_us", "--spin-duration-us", "spin us", _int_at_least(-1, "--spin-duration-us"),
                     -1, "session.intra_op.spin_duration_us")
BLOCK_BASE = Axis("dynamic_block_base", "--dynamic-block-base", "block base",
                  _int_at_least(0, "--dynamic-block-base"), 0, "session.dynamic_block_base")
INTER_OP = Axis("inter_op", "--inter-op", "inter-op", _inter_op, "seq")
CPUS = Axis("cpus", "--cpus", "cpus", _cpus, None, condition=True)
RATE = Axis("rate", "--rate", "rate", _rate, None, condition=True)

AXES = (THREADS, SPINNING, SPIN_DURATION, BLOCK_BASE, INTER_OP, CPUS, RATE)
SETTING_AXES = tuple(axis for axis in AXES if not axis.condition)
AXIS_BY_NAME = {axis.name: axis for axis in AXES}
# Axes that only matter when an intra-op pool exists (more than one thread).
POOL_AXES = ("allow_spinning", "spin_duration_us", "dynamic_block_base")


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_thread_counts():
    """The physical cores (ORT's own default pool size) and the powers of two below:
    2 cores -> [2, 1], 12 -> [12, 8, 4, 2, 1]. Counting every value would make
    a large machine's sweep take hours."""
    import psutil
    top = min(psutil.cpu_count(logical=False) or usable_cores(), usable_cores())
    counts = {top}
    power = 1
    while power < top:
        counts.add(power)
        power *= 2
    return sorted(counts, reverse=True)


def parse_axis(axis, text):
    """'1,2, 4' -> [1, 2, 4] (order kept, duplicates dropped)."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise InputError(f"{axis.option}: give at least one value")
    values = []
    for item in items:
        value = axis.parse(item)
        if value not in values:
            values.append(value)
    return values


def build_axes(given, builtin_loop):
    """{axis name: [values]} from the command line (`given`: name -> text or None)."""
    axes = {}
    for axis in AXES:
        text = given.get(axis.name)
        if text is not None:
            axes[axis.name] = parse_axis(axis, text)
    if "rate" in axes and not builtin_loop:
        raise InputError("--rate applies to the built-in loop (--model); your command sets its own request rate")
    axes.setdefault("threads", default_thread_counts())
    axes.setdefault("allow_spinning", ["1", "0"])
    if builtin_loop:
        axes.setdefault("rate", [10.0])
    return axes


@dataclass(frozen=True)
class Cell:
    id: str
    values: tuple        # ((axis name, value), ...) of the ORT settings in effect (None = not set)
    condition: tuple     # ((axis name, value), ...) of the conditions

    @property
    def value_map(self):
        return dict(self.values)

    @property
    def condition_map(self):
        return dict(self.condition)

    def settings(self):
        """The ORT settings under their real names, as a user would write them."""
        values = self.value_map
        settings = {}
        if values.get("threads") is not None:
            settings["intra_op_num_threads"] = values["threads"]
        inter_op = values.get("inter_op")
        if inter_op is not None:
            settings["execution_mode"] = "sequential" if inter_op == "seq" else "parallel"
            if inter_op != "seq":
                settings["inter_op_num_threads"] = inter_op
        for axis in SETTING_AXES:
            if axis.config_key and values.get(axis.name) is not None:
                settings[axis.config_key] = str(values[axis.name])
        return settings

    def overrides(self):
        """What the startup hook forces onto every InferenceSession."""
        settings = self.settings()
        overrides = {key: value for key, value in settings.items() if not key.startswith("session.")}
        config = {key: value for key, value in settings.items() if key.startswith("session.")}
        if config:
            overrides["config"] = config
        return overrides

    def label(self):
        values = self.value_map
        parts = []
        for axis in SETTING_AXES:
            value = values.get(axis.name)
            if value is not None:
                parts.append(f"{axis.label}={value}")
        return " ".join(parts) or "as the workload sets"

    def condition_label(self):
        return condition_label(self.condition)


def condition_label(condition):
    parts = []
    for name, value in condition:
        if name == "cpus":
            parts.append("no CPU quota" if value is None else f"cpus={value:g}")
        elif name == "rate":
            parts.append("closed loop" if value == 0 else f"rate={value:g}/s")
    return ", ".join(parts) or "as the workload runs"


def _normalize(values):
    """Drop settings that cannot change anything in this combination."""
    values = dict(values)
    if values.get("threads") == 1:
        for name in POOL_AXES:
            values[name] = None
    if values.get("allow_spinning") == "0":
        values["spin_duration_us"] = None
    return values


def build_cells(axes):
    """Cells in matrix order (conditions outermost); duplicates after normalization dropped."""
    setting_names = [axis.name for axis in SETTING_AXES if axis.name in axes]
    condition_names = [axis.name for axis in AXES if axis.condition and axis.name in axes]
    cells, seen = [], set()
    for condition in itertools.product(*(axes[name] for name in condition_names)):
        for combination in itertools.product(*(axes[name] for name in setting_names)):
            values = _normalize(zip(setting_names, combination))
            key = (condition, tuple(values.items()))
            if key in seen:
                continue
            seen.add(key)
            cells.append(Cell(f"c{len(cells) + 1}", tuple(values.items()),
                              tuple(zip(condition_names, condition))))
    return cells


def reference_values(axes):
    """ORT's defaults, as far as the matrix spans them: the most threads, everything else unset."""
    values = {"threads": max(axes["threads"])}
    for axis in SETTING_AXES:
        if axis.name != "threads" and axis.name in axes:
            values[axis.name] = axis.ort_default
    return _normalize(values)


def is_reference(cell, axes):
    """Whether `cell` runs with ORT's default settings (explicitly set defaults count)."""
    def effective(name, value):
        return AXIS_BY_NAME[name].ort_default if value is None else value
    values = cell.value_map
    return all(effective(name, values.get(name)) == effective(name, default)
               for name, default in reference_values(axes).items())


def check_ort_knows(axes, install, where):
    """Refuse an axis whose session config key the workload's ORT does not know
    (`where` says who loads it: "loaded by the workload").

    Returns notes for keys that could not be verified (native module unreadable)."""
    notes = []
    for axis in SETTING_AXES:
        if axis.config_key is None or axis.name not in axes:
            continue
        if all(value in (None, axis.ort_default) for value in axes[axis.name]):
            continue
        known = install.knows(axis.config_key)
        if known is False:
            raise InputError(
                f"{axis.option}: ORT {install.version or '(unknown version)'} ({where} from "
                f"{install.package_dir}) does not know the session option {axis.config_key}; "
                f"drop {axis.option} or use an ORT that has it")
        if known is None:
            notes.append(f"could not read ORT's native module in {install.package_dir}: "
                         f"{axis.config_key} is not verified")
    return notes
