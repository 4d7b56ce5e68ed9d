#!/usr/bin/env bash
# Runs the whole test suite. Needs PostgreSQL on 127.0.0.1:5432 (database "test") and Redis on 127.0.0.1:6379.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ ! -x /usr/bin/chromium ]; then
  # Browser tests drive Debian's chromium through Playwright (no browser download).
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will fail" >&2
fi
# One worker per core; a test file's tests stay on one worker, so its module fixtures (compiled kernel libraries,
# a running service) are built once.
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
