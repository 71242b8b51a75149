#!/usr/bin/env bash
# Set up a fresh virtual environment and run the main job: the demo on a bundled organism.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e .
hooked-reward demo "$@"
