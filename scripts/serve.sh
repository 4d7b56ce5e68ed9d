#!/usr/bin/env bash
# Starts the API and one worker on embedded defaults (SQLite, local artifact folder, serverless broker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/zerodata serve "$@"
