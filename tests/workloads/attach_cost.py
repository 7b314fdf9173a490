"""The per-run cost of ortprof's timing wrapper, measured in pairs.

Runs ortprof.attach's in-process code (hookcore + payload, as attach runs it in a process) in
this process, then calls the same session alternately through the patched method and through
the original one, --runs times, sleeping --sleep seconds after each call as a service between
requests would (0: back to back). Prints one JSON line: the p25/p50/p75 of each and their
differences in microseconds. Alternating keeps machine noise (frequency, other load) out of
the difference.

    python tests/workloads/attach_cost.py --width 16 --depth 1 --batch 1 --sleep 0.01
"""
import argparse
import json
import os
import sys
import time
import types

import numpy as np

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_inference_collection import Session

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attach_service import build_model  # noqa: E402


def quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(build_model(args.width, args.depth).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((args.batch, args.width), np.float32)}
    from ortprof.attach import payload_source
    module = types.ModuleType("_ortprof_attach")
    exec(compile(payload_source(), "<ortprof attach>", "exec"), module.__dict__)
    answer = json.loads(module.attach({"lease_seconds": 0, "by": {}}, module))
    read_fd = answer["read_fd"]
    os.set_blocking(read_fd, False)
    original = Session.run
    timed, plain = [], []
    for index in range(args.runs):
        if index % 2:
            start = time.monotonic()
            session.run(None, feed)
            timed.append(time.monotonic() - start)
        else:
            start = time.monotonic()
            original(session, None, feed)
            plain.append(time.monotonic() - start)
        if args.sleep:
            time.sleep(args.sleep)
        if index % 256 == 0:          # ortprof's reader, drained here
            try:
                while os.read(read_fd, 1 << 20):
                    pass
            except BlockingIOError:
                pass
    module.detach("done")
    result = {"width": args.width, "depth": args.depth, "batch": args.batch, "sleep": args.sleep, "runs": args.runs}
    for name, q in (("p25", 0.25), ("p50", 0.5), ("p75", 0.75)):
        result[f"plain_{name}_us"] = round(quantile(plain, q) * 1e6, 2)
        result[f"timed_{name}_us"] = round(quantile(timed, q) * 1e6, 2)
        result[f"cost_{name}_us"] = round((quantile(timed, q) - quantile(plain, q)) * 1e6, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
