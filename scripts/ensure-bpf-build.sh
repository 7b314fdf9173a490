#!/usr/bin/env bash
# Make sure the compiled scheduler/futex BPF program can be built: clang (BPF target),
# libbpf-dev (headers, libbpf.so to link the loader) and bpftool (vmlinux.h from the
# kernel's BTF, the skeleton). Installed when missing and we are root, otherwise says how.
# Never fails the build: without them ortprof falls back to its bpftrace program.
set -u
missing() {
  local need=()
  command -v clang >/dev/null 2>&1 || need+=(clang)
  [ -f /usr/include/bpf/libbpf.h ] || need+=(libbpf-dev)
  command -v bpftool >/dev/null 2>&1 || need+=(bpftool)
  command -v cc >/dev/null 2>&1 || need+=(gcc)
  echo "${need[*]}"
}
need=$(missing)
[ -z "$need" ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "ortprof: $need missing: the compiled BPF program is not built (bpftrace is used instead, at a higher cost). Install them as root: apt-get install $need" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ortprof: $need missing and no apt-get: install them to build the compiled BPF program (bpftrace is used instead)." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "ortprof: installing $need ..."
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq $need >/dev/null || echo "ortprof: apt-get install $need failed; see 'ortprof doctor --check sched-bpf'." >&2
exit 0
