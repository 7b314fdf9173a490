"""The built-in request loop of `ortprof sweep --model`: one `run()` per request,
inputs synthesized from the model's input signature.

Standalone on purpose (onnxruntime and numpy only), so it runs under any venv's
Python, with or without ortprof installed:

    python -m ortprof.sweep.loop --model M.onnx --rate 10 --duration 30
    python path/to/ortprof/sweep/loop.py --model M.onnx --shape sequence=128

Dynamic dimensions come from --shape: NAME=N sets the symbolic dimension NAME
in every input (e.g. batch=1, sequence=128); INPUT=D1xD2... gives one input's
whole shape. Anything left unresolved is 1. Settings are left to ORT's defaults
(ortprof's startup hook injects the sweep's settings).
"""
import argparse
import json
import signal
import sys
import time

EXIT_BAD_INPUT = 2

# ORT type string -> numpy dtype name
DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": None, "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(int16)": "int16", "tensor(uint16)": "uint16", "tensor(int32)": "int32",
    "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "object",
}


class ShapeError(Exception):
    """An input that cannot be synthesized, or a --shape that matches nothing."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="ONNX model path")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="requests per second; 0 = closed loop (default 10)")
    parser.add_argument("--duration", type=float, default=0,
                        help="stop after this many seconds (default: until interrupted)")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                        help="symbolic dimension (sequence=128) or a whole input shape (input_ids=1x128); repeatable")
    parser.add_argument("--seed", type=int, default=0, help="seed for synthesized float inputs")
    parser.add_argument("--check", action="store_true",
                        help="print the synthesized input shapes as JSON and exit (no run())")
    return parser.parse_args(argv)


def parse_shape_specs(specs):
    """['sequence=128', 'input_ids=1x128'] -> {'sequence': [128], 'input_ids': [1, 128]}."""
    parsed = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        name = name.strip()
        try:
            values = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            values = []
        if not sep or not name or not values or any(v < 0 for v in values):
            raise ShapeError(f"--shape {spec!r}: expected NAME=N or INPUT=D1xD2..., e.g. sequence=128")
        parsed[name] = values
    return parsed


def resolve_shapes(inputs, specs):
    """{input name: concrete shape} for ORT NodeArg-like inputs (.name, .shape)."""
    specs = dict(specs)
    used = set()
    shapes = {}
    for node in inputs:
        declared = list(node.shape or [])
        if node.name in specs:
            shape = specs[node.name]
            used.add(node.name)
            if declared and len(shape) != len(declared):
                raise ShapeError(f"--shape {node.name}: the model declares rank {len(declared)} "
                                 f"({_show(declared)}), got {len(shape)} dims")
            for given, want in zip(shape, declared):
                if isinstance(want, int) and want > 0 and given != want:
                    raise ShapeError(f"--shape {node.name}: dimension {given} where the model fixes {want} "
                                     f"({_show(declared)})")
            shapes[node.name] = shape
            continue
        shape = []
        for dim in declared:
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str) and dim in specs:
                if len(specs[dim]) != 1:
                    raise ShapeError(f"--shape {dim}: a symbolic dimension takes one number")
                used.add(dim)
                shape.append(specs[dim][0])
            else:
                shape.append(1)
        shapes[node.name] = shape
    unknown = sorted(set(specs) - used)
    if unknown:
        described = "; ".join(f"{node.name} {_show(node.shape or [])}" for node in inputs)
        raise ShapeError(f"--shape {', '.join(unknown)}: no input or symbolic dimension of that name "
                         f"(model inputs: {described})")
    return shapes


def _show(shape):
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def synthesize_feed(inputs, shapes, seed=0):
    """Inputs that every model accepts: ids are 0, masks 1, floats uniform in [0, 1)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    feed = {}
    for node in inputs:
        dtype = DTYPES.get(node.type)
        if dtype is None:
            raise ShapeError(f"input {node.name}: type {node.type} cannot be synthesized")
        shape = shapes[node.name]
        if dtype == "object":
            feed[node.name] = np.full(shape, "a", dtype=object)
        elif dtype == "bool":
            feed[node.name] = np.ones(shape, dtype=bool)
        elif dtype.startswith("float"):
            feed[node.name] = rng.random(shape).astype(dtype)
        else:
            fill = 1 if "mask" in node.name.lower() else 0
            feed[node.name] = np.full(shape, fill, dtype=dtype)
    return feed


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def run_loop(session, feed, rate, duration):
    """One run() per request at `rate` (0 = back to back) until `duration` or a signal."""
    period = 1.0 / rate if rate > 0 else 0.0
    count = 0
    start = time.monotonic()
    next_due = start
    try:
        while not duration or time.monotonic() - start < duration:
            if period:
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_due += period
            session.run(None, feed)
            count += 1
    except (KeyboardInterrupt, _Stop):
        pass
    return count, time.monotonic() - start


def main(argv=None):
    args = parse_args(argv)
    import onnxruntime as ort
    try:
        specs = parse_shape_specs(args.shape)
        try:
            session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT's own load errors: one line, not a traceback
            raise ShapeError(f"cannot load {args.model}: {str(error).strip().splitlines()[-1]}")
        shapes = resolve_shapes(session.get_inputs(), specs)
        feed = synthesize_feed(session.get_inputs(), shapes, args.seed)
    except ShapeError as error:
        print(f"loop: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.check:
        print(json.dumps({"ort_version": ort.__version__,
                          "inputs": {node.name: {"type": node.type, "shape": shapes[node.name]}
                                     for node in session.get_inputs()}}))
        return 0
    signal.signal(signal.SIGTERM, _raise_stop)
    count, elapsed = run_loop(session, feed, args.rate, args.duration)
    print(f"loop: requests={count} elapsed={elapsed:.1f}s rate={args.rate:g}/s ort={ort.__version__}",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
