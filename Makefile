# The two commands of the README: `make demo` and `make test`.
# Both do all set-up on a fresh clone: .venv, ortprof and its dependencies, perf.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OLD_ORT := $(VENV)/ort-1.15.1/.installed
NODE_TOOLS := tests/js/node_modules/.installed

BPF_DIR := ortprof/signals/sched/compiled
BPF_LOADER := $(BPF_DIR)/build/ortprof-bpf

.PHONY: setup perf bpf test-tools demo typecheck test test-fast bench clean

setup: $(STAMP) $(OLD_ORT) perf bpf

$(STAMP): pyproject.toml tests/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,plot]' -c tests/constraints.txt
	touch $(STAMP)

# A second venv with an older ORT wheel (PAUSE inlined into each spin loop,
# nsync-based blocking) so tests cover both generations of the thread pool.
$(OLD_ORT):
	$(PYTHON) -m venv $(VENV)/ort-1.15.1
	$(VENV)/ort-1.15.1/bin/pip install -q 'onnxruntime==1.15.1' 'numpy<2'
	touch $(OLD_ORT)

# perf comes from the distribution: installed when missing and we are root.
perf:
	@bash scripts/ensure-perf.sh

# The compiled BPF program (scheduler events and futex counts, libbpf) into $(BPF_DIR)/build/:
# clang, libbpf-dev and bpftool installed when missing and we are root. A failed build does not
# fail setup: ortprof then records with bpftrace (`ortprof doctor --check sched-bpf` says so).
bpf: $(BPF_LOADER)

$(BPF_LOADER): $(BPF_DIR)/ortprof.bpf.c $(BPF_DIR)/ortprof.bpf.h $(BPF_DIR)/loader.c $(BPF_DIR)/build.sh scripts/ensure-bpf-build.sh
	@bash scripts/ensure-bpf-build.sh
	@bash $(BPF_DIR)/build.sh || echo "ortprof: the compiled BPF program was not built: scheduler events need record --sched (bpftrace, costlier); see 'ortprof doctor --check sched-bpf'" >&2

demo: setup
	$(BIN)/ortprof record --name demo --duration 8 -- $(BIN)/python -m ortprof.demo --rate 10 --duration 30
	$(BIN)/ortprof report

# Independent checkers the tests run against ortprof's outputs (browser, go tool pprof, node validators).
test-tools: $(NODE_TOOLS)

$(NODE_TOOLS): tests/js/package.json tests/js/package-lock.json
	@bash scripts/ensure-test-tools.sh
	cd tests/js && npm ci --ignore-scripts --no-audit --no-fund --silent
	touch $(NODE_TOOLS)

# mypy over model/, signals/ and analysis/ (pyproject.toml [tool.mypy]). docs/testing.md
typecheck: $(STAMP)
	$(BIN)/mypy

# Everything: the type check, the fast layer and the live tests (perf, ORT sessions, sweeps, go, node, chromium).
test: setup test-tools typecheck
	$(BIN)/python -m pytest -q -rs

# The fast layer, to run after every change: unit and golden tests, no subprocess, no ORT
# session (tests/conftest.py fails any test not marked live that starts one), after the type check. docs/testing.md
test-fast: setup test-tools typecheck
	$(BIN)/python -m pytest -q -m "not live"

bench: setup
	$(BIN)/python scripts/bench_record.py
	$(BIN)/python scripts/bench_report.py
	$(BIN)/python scripts/bench_sweep.py

clean:
	rm -rf $(VENV) .ortprof .pytest_cache $(BPF_DIR)/build
