#!/usr/bin/env bash
# Tools the test suite uses as independent checkers of ortprof's outputs:
# a real browser (Debian's chromium-headless-shell, driven by playwright with
# executable_path, no browser download), `go tool pprof` (Debian's golang) and
# node for speedscope's published schema and the npm pprof-format decoder.
# Installed when missing and we are root; otherwise says how.
set -u
need=()
command -v chromium-headless-shell >/dev/null 2>&1 || [ -x /usr/lib/chromium/headless_shell ] || need+=(chromium-headless-shell)
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "ortprof tests: missing ${need[*]}; install them as root: apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "ortprof tests: installing ${need[*]} ..."
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null || { echo "ortprof tests: apt-get install ${need[*]} failed" >&2; exit 1; }
fi
exit 0
