#!/usr/bin/env bash
# Tests of the browser SDK: node unit tests, then headless Chromium against the
# real gateway. Installs what is missing (Debian's chromium, playwright-core).
#
#   clients/js/test.sh [PATH_TO_PUSHGATE]   (default: target/debug/pushgate,
#                                            from `cargo build --bin pushgate`)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

bin="${1:-$root/target/debug/pushgate}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [ ! -x "$bin" ]; then
  echo "clients/js/test.sh: no pushgate binary at $bin (run: cargo build --bin pushgate)" >&2
  exit 1
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "clients/js/test.sh: $tool is missing: install Node.js 20 or later" >&2; exit 1; }
done

chromium="${PUSHGATE_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "== installing chromium (Debian package)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "clients/js/test.sh: $chromium is missing and installing it needs root (apt-get install chromium)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

cd "$here"
echo "== npm ci"
npm ci --no-audit --no-fund --prefer-offline

echo "== node --test (SDK unit tests, then Chromium against $bin)"
export PUSHGATE_BIN="$bin" PUSHGATE_CHROMIUM="$chromium"
# One file at a time: the browser tests measure delays, and the machine is small.
node --test --test-concurrency=1 test/unit.test.js test/browser.test.js test/demo.test.js
