#!/usr/bin/env bash
# Make sure `perf` is installed: install it when missing and we are root,
# otherwise say how. Never fails the build: ortprof falls back to py-spy.
set -u
if command -v perf >/dev/null 2>&1 && perf --version >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ortprof: perf is not installed. Install it as root: apt-get install linux-perf (Debian) or apt-get install linux-tools-\$(uname -r) (Ubuntu)." >&2
  exit 0
fi
. /etc/os-release 2>/dev/null || true
export DEBIAN_FRONTEND=noninteractive
echo "ortprof: installing perf ..."
apt-get update -qq >/dev/null
case "${ID:-}" in
  ubuntu) apt-get install -y -qq "linux-tools-$(uname -r)" linux-tools-common >/dev/null || apt-get install -y -qq linux-tools-generic >/dev/null ;;
  *) apt-get install -y -qq linux-perf >/dev/null ;;
esac
command -v perf >/dev/null 2>&1 && echo "ortprof: $(perf --version)" || echo "ortprof: could not install perf; see 'ortprof doctor'." >&2
exit 0
