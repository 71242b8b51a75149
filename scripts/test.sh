#!/usr/bin/env bash
# Set up a fresh virtual environment and run the test suite (the README's test command; CI runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh "[test]"
# The browser tests open every report in headless Chromium: Debian's chromium and its driver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium/chromium-driver missing and not root: the browser tests will be skipped" >&2
  fi
fi
ruff check hooked_reward tests benchmarks
ruff format --check hooked_reward tests benchmarks
# The type checker ([tool.mypy] in pyproject.toml). Not gating yet: hooked_reward/ is not clean (issue 20 item 6);
# make this line gating (drop the `||` part) once `mypy hooked_reward` reports no errors.
mypy hooked_reward || echo "mypy: errors above (not gating yet)" >&2
set +e
python -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
