"""How the latency histogram names a session: its identity plus what is known of it.

Every source of run() records (the startup hook, an attach, the C API probes, the pybind11
dispatcher probes) writes `session` records in the hook's shape. From one, the histogram's
labels are:

- `session`: the model's file name and the session's handle, `model.onnx@0x7f3a2c1b9e70`
  (the OrtSession* of a C API client, the address of the pybind object of a Python session);
  `unknown@0x...` when the model is not known (a session created before ortprof looked, or
  timed by probes that read nothing from it); `model.onnx#2` for a record with no handle (the
  hook's files written before records had one);
- `model`: the model's path (or `<N bytes>`), `unknown` when it is not known;
- `options`: the thread counts, execution mode, optimization level and session config entries
  (`intra_op_num_threads=2,session.intra_op.allow_spinning=0`), `unknown` when they are not
  known, `none set` for a C API client whose creation was seen setting none (ORT's defaults).
"""
import os
from dataclasses import dataclass
from typing import Dict, Iterable

UNKNOWN = "unknown"
NONE_SET = "none set"
# the options that decide threading, in this order, then every session config entry by key
OPTION_KEYS = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode", "graph_optimization_level")


@dataclass(frozen=True)
class SessionLabels:
    session: str
    model: str = UNKNOWN
    options: str = UNKNOWN

    @classmethod
    def of_number(cls, number) -> "SessionLabels":
        """A run whose session record was not seen."""
        return cls(str(number))


def options_label(record: dict) -> str:
    if record.get("options_known") is False:
        return UNKNOWN
    options = record.get("options") or {}
    parts = [f"{key}={options[key]}" for key in OPTION_KEYS if options.get(key) is not None]
    config = options.get("config") or {}
    parts += [f"{key}={value}" for key, value in sorted(config.items())]
    if not parts:
        return NONE_SET if record.get("options_known") else UNKNOWN
    return ",".join(parts)


def session_labels_of(record: dict) -> SessionLabels:
    model = record.get("model")
    name = (os.path.basename(model) or model) if model else UNKNOWN
    handle = record.get("handle")
    identity = f"{name}@{handle}" if handle else f"{name}#{record.get('session')}"
    return SessionLabels(identity, str(model) if model else UNKNOWN, options_label(record))


def session_labels(records: Iterable[dict]) -> Dict[int, SessionLabels]:
    """Session number -> its labels, from the `session` records among `records` (the last
    record of a number wins)."""
    return {record["session"]: session_labels_of(record) for record in records
            if record.get("event") == "session" and record.get("session") is not None}
