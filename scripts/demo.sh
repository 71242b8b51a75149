#!/usr/bin/env bash
# Set up a fresh virtual environment and run the main job: the demo on the bundled organism.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh ""
hooked-reward demo "$@"
