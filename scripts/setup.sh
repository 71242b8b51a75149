#!/usr/bin/env bash
# Shared set-up, sourced by demo.sh and test.sh: a .venv with torch 2.13.0 (the CPU wheel on these machines)
# installed first, then the project (with the extras given as $1, e.g. "[test]").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".${1:-}"
