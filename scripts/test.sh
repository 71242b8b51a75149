#!/usr/bin/env bash
# Set up a fresh virtual environment and run the test suite (the README's test command; CI runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh "[test]"
ruff check hooked_reward tests benchmarks
set +e
python -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
