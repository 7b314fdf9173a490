"""A Python service that ortprof did not start, for tests/test_attach.py.

It builds a small model with onnx, creates its own session with its own options
(allow_spinning=0, --threads intra-op threads, a config entry under a key ortprof does not
probe), then calls run() about --rate times a second. Each run's start and duration, as the
service itself measures them around session.run(), go to OUT/latency.txt ("start duration"
per line, CLOCK_MONOTONIC seconds). It prints "ready <pid>" once the loop runs.

Probes: when the file OUT/probe-<name> appears, the service writes OUT/probe-<name>.json:
whether InferenceSession's methods are the original objects, whether ortprof's module is in
sys.modules, its threads, its open descriptors and whether the session still has ortprof's
attribute.

Controls, also files in OUT: `pause` (while it exists no run(), the loop only sleeps: the
process still reaches safe points), `block` (the main thread blocks for good in a lock's
wait: no safe point any more), `fork` (removed, then a child is forked, a multiprocessing-style worker
that does not run the session: it writes OUT/child/probe-forked.json and exits after 3 s).

--ticker starts a thread that sleeps 1 ms at a time and writes to OUT/gaps.txt every gap
longer than 5 ms ("start gap"): how long the process was stopped.
--model PATH loads a model file instead of building one (then onnx is not imported: a
process as `nobody` needs only numpy and onnxruntime).
"""
import argparse
import json
import os
import sys
import threading
import time

import numpy as np

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_inference_collection import InferenceSession, Session

ORIGINAL = {name: vars(InferenceSession).get(name) for name in ("__init__", "run", "run_with_iobinding")}
ORIGINAL_RUN = Session.run
ORIGINAL_ADD_ENTRY = vars(ort.SessionOptions).get("add_session_config_entry")


def build_model(width, depth):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    nodes, inits, last = [], [], "x"
    for i in range(depth):
        weight = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / width ** 0.5, f"w{i}")
        inits.append(weight)
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        last = f"r{i}"
    graph = helper.make_graph(nodes, "attach_service",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [None, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def probe(out, name, session):
    answer = {
        "init_is_original": vars(InferenceSession).get("__init__") is ORIGINAL["__init__"],
        "run_is_original": InferenceSession.run is ORIGINAL_RUN and vars(InferenceSession).get("run") is ORIGINAL["run"],
        "run_with_iobinding_is_original": vars(InferenceSession).get("run_with_iobinding") is ORIGINAL["run_with_iobinding"],
        "add_entry_is_original": vars(ort.SessionOptions).get("add_session_config_entry") is ORIGINAL_ADD_ENTRY,
        "patched_flag": "_ortprof_patched" in vars(InferenceSession),
        "module": "_ortprof_attach" in sys.modules,
        "session_attribute": hasattr(session, "_ortprof_session"),
        "threads": sorted(thread.name for thread in threading.enumerate()),
        "fds": {fd: _link(fd) for fd in os.listdir("/proc/self/fd")},
    }
    path = os.path.join(out, f"probe-{name}.json")
    with open(path + ".tmp", "w") as stream:
        json.dump(answer, stream)
    os.rename(path + ".tmp", path)


def _link(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def ticker(out):
    with open(os.path.join(out, "gaps.txt"), "a", buffering=1) as stream:
        last = time.monotonic()
        while True:
            time.sleep(0.001)
            now = time.monotonic()
            if now - last > 0.005:
                stream.write(f"{last:.6f} {now - last:.6f}\n")
            last = now


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ticker", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--save-model", help="write the built model there and exit")
    args = parser.parse_args()
    if args.save_model:
        with open(args.save_model, "wb") as stream:
            stream.write(build_model(args.width, args.depth).SerializeToString())
        return 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.add_session_config_entry("session.load_model_format", "ONNX")    # a key ortprof does not probe
    model = args.model or build_model(args.width, args.depth).SerializeToString()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((args.batch, args.width), np.float32)}
    out = args.out
    if args.ticker:
        threading.Thread(target=ticker, args=(out,), name="ticker", daemon=True).start()
    serve(session, feed, out, 1.0 / args.rate)


def serve(session, feed, out, period):
    os.makedirs(out, exist_ok=True)
    latency = open(os.path.join(out, "latency.txt"), "a", buffering=1)
    print(f"ready {os.getpid()}", flush=True)
    next_run = time.monotonic()
    while True:
        if os.path.exists(os.path.join(out, "block")):
            lock = threading.Lock()
            lock.acquire()
            lock.acquire()                   # blocks for good, the GIL released once
        if not os.path.exists(os.path.join(out, "pause")):
            start = time.monotonic()
            session.run(None, feed)
            latency.write(f"{start:.9f} {time.monotonic() - start:.9f}\n")
        for name in os.listdir(out):
            if name.startswith("probe-") and "." not in name:
                probe(out, name[len("probe-"):], session)
                os.unlink(os.path.join(out, name))
            elif name == "fork":
                os.unlink(os.path.join(out, name))
                child = os.fork()
                if child == 0:     # ORT's pool threads are not in the child: it does not run the session
                    try:
                        os.makedirs(os.path.join(out, "child"), exist_ok=True)
                        probe(os.path.join(out, "child"), "forked", session)
                        time.sleep(3)
                    finally:
                        os._exit(0)
                print(f"child {child}", flush=True)
        next_run += period
        time.sleep(max(0.0, next_run - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main())
