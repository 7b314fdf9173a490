#!/usr/bin/env bash
# Builds the compiled BPF program and its loader into BUILD_DIR (default: build/ next to
# this script; git-ignored): vmlinux.h from the running kernel's BTF, the BPF object
# (clang, CO-RE), its libbpf skeleton (bpftool) and the loader `ortprof-bpf` (cc, -lbpf).
# Exit 0 with the loader built; non-zero with the reason on stderr (the caller decides
# whether that fails anything: `make setup` does not fail on it).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/build}
PATH=$PATH:/usr/sbin:/sbin
for tool in clang bpftool cc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "ortprof-bpf: $tool is not installed" >&2; exit 2; }
done
[ -f /usr/include/bpf/libbpf.h ] || { echo "ortprof-bpf: libbpf-dev is not installed" >&2; exit 2; }
[ -r /sys/kernel/btf/vmlinux ] || { echo "ortprof-bpf: the kernel has no BTF (/sys/kernel/btf/vmlinux)" >&2; exit 2; }
case "$(uname -m)" in
  x86_64) arch=x86 ;; aarch64) arch=arm64 ;; s390x) arch=s390 ;; ppc64le) arch=powerpc ;; riscv64) arch=riscv ;;
  *) echo "ortprof-bpf: no BPF target for $(uname -m)" >&2; exit 2 ;;
esac
tmp=$(mktemp -d "$build.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$build" && mktemp -d "$build.tmp.XXXXXX"; })
trap 'rm -rf "$tmp"' EXIT
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$tmp/vmlinux.h"
clang -g -O2 -target bpf "-D__TARGET_ARCH_$arch" -I "$tmp" -I "$here" -c "$here/ortprof.bpf.c" -o "$tmp/ortprof.bpf.o"
bpftool gen skeleton "$tmp/ortprof.bpf.o" name ortprof_bpf > "$tmp/ortprof.skel.h"
cc -O2 -Wall -I "$tmp" -I "$here" "$here/loader.c" -lbpf -o "$tmp/ortprof-bpf"
# The kernel it was built for: a loader built against another kernel's BTF still loads
# (CO-RE), the file says which.
uname -r > "$tmp/kernel"
mkdir -p "$build"
mv "$tmp/ortprof-bpf" "$tmp/kernel" "$build/"
echo "ortprof-bpf: built $build/ortprof-bpf"
