#!/usr/bin/env bash
# Set up a fresh virtual environment and run the main job: the demo on the bundled organism. The [viz] extra
# (circuitsvis) gives the report its interactive attention views, as the README shows them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh "[viz]"
hooked-reward demo "$@"
