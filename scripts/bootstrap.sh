#!/usr/bin/env bash
# Creates .venv and installs zerodata with its exact pins; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.zerodata-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "installing zerodata into .venv (first run takes a few minutes; log: .venv/install.log)" >&2
[ -x .venv/bin/python ] || python3.11 -m venv .venv || python3 -m venv .venv
log=.venv/install.log
{
  .venv/bin/python -m pip install --upgrade pip &&
  # torch first, alone: this exact version is the CPU build on local disk (a bare "torch" pulls a multi-GB CUDA build).
  .venv/bin/python -m pip install torch==2.13.0 &&
  .venv/bin/python -m pip install -c requirements.lock -e ".[test]"
} > "$log" 2>&1 || { tail -n 40 "$log" >&2; echo "install failed; full log: $log" >&2; exit 1; }
echo "$want" > "$stamp"
