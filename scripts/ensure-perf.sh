#!/usr/bin/env bash
# Make sure `perf` (and `bpftrace`, which counts futex calls in the kernel) are
# installed: install them when missing and we are root, otherwise say how.
# Never fails the build: ortprof falls back to py-spy without perf, and to
# perf's per-call futex tracepoints without bpftrace.
set -u
have_perf() { command -v perf >/dev/null 2>&1 && perf --version >/dev/null 2>&1; }
have_bpftrace() { command -v bpftrace >/dev/null 2>&1; }
if have_perf && have_bpftrace; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  have_perf || echo "ortprof: perf is not installed. Install it as root: apt-get install linux-perf (Debian) or apt-get install linux-tools-\$(uname -r) (Ubuntu)." >&2
  have_bpftrace || echo "ortprof: bpftrace is not installed (futex calls are then traced one by one by perf). Install it as root: apt-get install bpftrace." >&2
  exit 0
fi
. /etc/os-release 2>/dev/null || true
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
if ! have_perf; then
  echo "ortprof: installing perf ..."
  case "${ID:-}" in
    ubuntu) apt-get install -y -qq "linux-tools-$(uname -r)" linux-tools-common >/dev/null || apt-get install -y -qq linux-tools-generic >/dev/null ;;
    *) apt-get install -y -qq linux-perf >/dev/null ;;
  esac
  have_perf && echo "ortprof: $(perf --version)" || echo "ortprof: could not install perf; see 'ortprof doctor'." >&2
fi
if ! have_bpftrace; then
  echo "ortprof: installing bpftrace ..."
  apt-get install -y -qq bpftrace >/dev/null
  have_bpftrace && echo "ortprof: $(bpftrace --version)" || echo "ortprof: could not install bpftrace; see 'ortprof doctor --check futex-bpf'." >&2
fi
exit 0
