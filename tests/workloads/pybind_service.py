"""A Python service that ortprof did not start, for tests/test_pybind_dispatch.py.

It builds a small model with onnx (or loads --model), creates a session, and calls run()
about --rate times a second for at most --seconds. Each run's start and duration, as the
service measures them around session.run() (CLOCK_MONOTONIC seconds), go to OUT/latency.txt
("start duration" per line). It writes OUT/ready.json once the loop runs: its pid, uid, the
id() of the session's pybind object (`session._sess`, what the dispatcher probes see as
`self`) and onnxruntime's version, and prints "ready".

--raise-every N: every Nth call feeds a wrong shape (run() raises; logged in OUT/raised.txt
as "start duration"), to show a probed dispatcher survives exceptions.
--save-model PATH: write the built model there and exit.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import onnxruntime as ort


def build_model(width, depth):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    nodes, inits, last = [], [], "x"
    for i in range(depth):
        weight = rng.standard_normal((width, width)).astype(np.float32) / width ** 0.5
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        last = f"r{i}"
    graph = helper.make_graph(nodes, "pybind_service",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [None, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--raise-every", type=int, default=0)
    parser.add_argument("--model")
    parser.add_argument("--save-model")
    args = parser.parse_args()
    if args.save_model:
        with open(args.save_model, "wb") as stream:
            stream.write(build_model(args.width, args.depth).SerializeToString())
        return 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    model = args.model or build_model(args.width, args.depth).SerializeToString()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((args.batch, args.width), np.float32)}
    wrong = {"x": np.ones((args.batch, args.width + 1), np.float32)}
    os.makedirs(args.out, exist_ok=True)
    latency = open(os.path.join(args.out, "latency.txt"), "a", buffering=1)
    raised = open(os.path.join(args.out, "raised.txt"), "a", buffering=1)
    ready = {"pid": os.getpid(), "uid": os.getuid(), "session": id(session._sess), "version": ort.__version__}
    with open(os.path.join(args.out, "ready.json.tmp"), "w") as stream:
        json.dump(ready, stream)
    os.rename(os.path.join(args.out, "ready.json.tmp"), os.path.join(args.out, "ready.json"))
    print("ready", flush=True)
    period, calls = 1.0 / args.rate, 0
    deadline = time.monotonic() + args.seconds
    next_run = time.monotonic()
    while time.monotonic() < deadline:
        calls += 1
        start = time.monotonic()
        if args.raise_every and calls % args.raise_every == 0:
            try:
                session.run(None, wrong)
            except Exception:
                raised.write(f"{start:.9f} {time.monotonic() - start:.9f}\n")
        else:
            session.run(None, feed)
            latency.write(f"{start:.9f} {time.monotonic() - start:.9f}\n")
        next_run += period
        time.sleep(max(0.0, next_run - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
