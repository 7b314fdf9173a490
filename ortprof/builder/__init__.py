"""`ortprof build`: build ONNX Runtime from source with symbols and hand it to record/report.

checkout      the ORT source tree: version, commit, what it needs, `--ref` clones
plan          the flags and commands of one build (also what --dry-run prints)
preflight     tools, disk and memory checked before anything starts
deps_mirror   offline builds: cmake/deps.txt pointed at local archives
progress      ninja's [x/N] lines -> progress bar, ETA, first error, OOM
venvs         the build venv and the venv the wheel is installed into
orchestrate   runs a plan end to end
manifest      what was built and where (ortprof.build/1), found again by config name
"""
