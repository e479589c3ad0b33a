#!/usr/bin/env bash
# make demo: placeholder until the engine lands (issue 4); proves the build runs.
set -euo pipefail
build=${1:-build}
echo "tapmap demo: built programs:"; ls "$build/bin"
