#!/usr/bin/env bash
# The project's two entry points. Each creates (or reuses) the virtual environment .venv and
# installs the project with everything it needs, then runs:
#   ./run.sh demo [options]     the main job: train VSE-ens and WARP on an embedded dataset
#   ./run.sh test [pytest args] the test suite
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv="${VSE_RECSYS_VENV:-.venv}"

setup() {
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".[test]"
}

case "${1:-}" in
    demo) shift; setup; exec "$venv/bin/vse-recsys" demo "$@" ;;
    test) shift; setup; exec "$venv/bin/python" -m pytest "$@" ;;
    *) echo "usage: ./run.sh demo [options] | ./run.sh test [pytest options]" >&2; exit 2 ;;
esac
