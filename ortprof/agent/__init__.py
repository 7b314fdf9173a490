"""`ortprof agent`: continuous, low-overhead profiling of every ORT process on a host.

discovery   which processes have ORT's native module mapped (host or containers)
hooktail    the startup hook's run() records of a process, read incrementally
window      one profiling window of several processes: perf, /proc, cgroup -> (Profile, Report)
pyroscope   pprof pushes to Pyroscope's /ingest through a bounded on-disk spool
metrics     Prometheus metrics of the last windows
runner      the loop: discover, record, analyze, push, export; SIGTERM stops it
logs        structured log lines on stderr (JSON lines or logfmt)
"""
