"""The demo request loop. Needs only onnxruntime and numpy, so it also runs
under another venv's Python (e.g. an older ORT wheel or a source build):

    python -m ortprof.demo --rate 10            # builds/caches the model first
    python path/to/workload.py --model M.onnx   # plain script, any ORT venv

It behaves like the seed service: one `run()` per request at a fixed rate (or
closed loop with --rate 0), with SessionOptions taken from the command line,
and prints a one-line summary (count, latency percentiles, process CPU) at the end.
"""
import argparse
import resource
import signal
import sys
import time

EXECUTION_MODES = ("sequential", "parallel")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="ONNX model path (default: the cached demo model of --size)")
    parser.add_argument("--size", default="small", choices=["small", "large"],
                        help="small = all-MiniLM-L6-v2 shape, large = bert-large shape")
    parser.add_argument("--seq-len", type=int, default=10, help="tokens per request (default 10)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="requests per second; 0 = closed loop (default 1, as the seed service)")
    parser.add_argument("--duration", type=float, default=0,
                        help="stop after this many seconds (default: run until interrupted)")
    parser.add_argument("--requests", type=int, default=0, help="stop after this many requests")
    parser.add_argument("--intra-op-num-threads", type=int, default=None)
    parser.add_argument("--inter-op-num-threads", type=int, default=None)
    parser.add_argument("--allow-spinning", choices=["0", "1"], default=None,
                        help="session.intra_op.allow_spinning")
    parser.add_argument("--spin-duration-us", default=None, help="session.intra_op.spin_duration_us")
    parser.add_argument("--dynamic-block-base", default=None, help="session.dynamic_block_base")
    parser.add_argument("--execution-mode", choices=EXECUTION_MODES, default=None)
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="any session config entry, repeatable")
    parser.add_argument("--quiet", action="store_true", help="no summary line")
    return parser.parse_args(argv)


def session_options(args):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if args.intra_op_num_threads is not None:
        options.intra_op_num_threads = args.intra_op_num_threads
    if args.inter_op_num_threads is not None:
        options.inter_op_num_threads = args.inter_op_num_threads
    if args.execution_mode == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    entries = dict(item.split("=", 1) for item in args.config)
    for key, value in (("session.intra_op.allow_spinning", args.allow_spinning),
                       ("session.intra_op.spin_duration_us", args.spin_duration_us),
                       ("session.dynamic_block_base", args.dynamic_block_base)):
        if value is not None:
            entries[key] = value
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def run_loop(args):
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(args.model, session_options(args), providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros((1, args.seq_len), dtype=np.int64) for i in session.get_inputs()}
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    latencies = []
    signal.signal(signal.SIGTERM, _raise_stop)
    start = time.monotonic()
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    next_due = start
    try:
        while True:
            now = time.monotonic()
            if args.duration and now - start >= args.duration:
                break
            if args.requests and len(latencies) >= args.requests:
                break
            if period and now < next_due:
                time.sleep(next_due - now)
            next_due += period
            t0 = time.perf_counter()
            session.run(None, feed)
            latencies.append((time.perf_counter() - t0) * 1000)
    except (KeyboardInterrupt, _Stop):
        pass
    elapsed = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime + usage.ru_stime - usage_start.ru_utime - usage_start.ru_stime) / max(elapsed, 1e-9)
    if not args.quiet:
        ordered = sorted(latencies)
        print(f"demo: requests={len(latencies)} elapsed={elapsed:.1f}s rate={args.rate:g}/s "
              f"p50={percentile(ordered, 50):.2f}ms p95={percentile(ordered, 95):.2f}ms "
              f"cpu={cpu * 100:.1f}% ort={ort.__version__}", flush=True)
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.model is None:
        try:
            from ortprof.demo.model import demo_model_path
        except ImportError:
            print("demo: --model is required when ortprof is not importable", file=sys.stderr)
            return 2
        args.model = str(demo_model_path(args.size))
    return run_loop(args)


if __name__ == "__main__":
    sys.exit(main())
