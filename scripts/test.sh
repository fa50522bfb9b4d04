#!/usr/bin/env bash
# Install what the test suite needs, then run lint, type checks and every test.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k scheduler`); one tier alone:
#   bash scripts/test.sh tests/unit          # in-memory, no network needed (under a minute)
#   bash scripts/test.sh tests/integration   # real loopback sockets, in-process
#   bash scripts/test.sh tests/system        # subprocesses, Prometheus, blackbox, netns, image
# (or `-m unit` / `-m integration` / `-m system`, the markers tests/conftest.py sets).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-blackbox-exporter >/dev/null 2>&1 || missing+=(prometheus-blackbox-exporter)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the status page's browser tests
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)  # Debian's python3 -m venv
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "note: tests that need them will be skipped; install with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
