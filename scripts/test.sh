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
# Each check prints one summary line; a failing check's full output follows its line, and the script fails.
check() {  # check NAME COMMAND...: run it, print "NAME: ok" or "NAME: FAILED" with its output
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "$name: ok"
  else
    echo "$name: FAILED"
    printf '%s\n' "$out"
    return 1
  fi
}
check "ruff check" ruff check hooked_reward tests benchmarks
check "ruff format" ruff format --check hooked_reward tests benchmarks
# The type checker ([tool.mypy] in pyproject.toml): zero errors on hooked_reward/ (gating).
check "mypy" mypy hooked_reward
set +e
python -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest: FAILED (collected no tests)" >&2; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "pytest: ok"; else echo "pytest: FAILED (exit $rc)"; fi
exit "$rc"
