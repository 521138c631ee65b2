#!/usr/bin/env bash
# Tests of the Python client, against the real gateway binary.
#
# Creates clients/python/.venv when missing, installs the package with its
# test extras (again only when pyproject.toml changed), builds the gateway
# (`cargo build --bin pushgate`) unless PUSHGATE_TEST_BINARY names a binary,
# and runs pytest. Arguments go to pytest. Fails when any test fails and when
# no test ran at all.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "== python client: creating $venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.installed-pyproject"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== python client: installing the package and its test extras"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"
  echo "$want" >"$stamp"
fi

if [ -z "${PUSHGATE_TEST_BINARY:-}" ]; then
  echo "== python client: building the gateway"
  (cd "$repo" && cargo build --locked --bin pushgate)
fi

echo "== python client: tests"
status=0
(cd "$here" && "$venv/bin/python" -m pytest -p no:cacheprovider "$@") || status=$?
if [ "$status" -eq 5 ]; then
  echo "python client: pytest collected no tests: that is a failure" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "python client: tests FAILED (pytest exit code $status)" >&2
fi
exit "$status"
