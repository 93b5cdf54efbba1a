#!/usr/bin/env bash
# The project's entry points. Each creates (or reuses) a virtual environment and installs the
# project with everything it needs, then runs:
#   ./run.sh demo [options]             the main job: train VSE-ens and WARP on an embedded dataset
#   ./run.sh test [pytest args]         the test suite (in .venv)
#   ./run.sh test-boundscheck [args]    the kernel tests against a build with Cython's bounds
#                                       checks on (in .venv-boundscheck; .ci/run runs it too)
#   ./run.sh bench-setup                also the benchmark extras in .venv: matplotlib and
#                                       LightFM (an optional peer in benchmarks/compare.py)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# tests that exercise the compiled kernels, run again against the bounds-checked build
KERNEL_TESTS=(tests/test_kernels.py tests/test_sampler_stats.py tests/test_composed.py
              tests/test_model.py tests/test_reliability_fuzz_model.py tests/test_boundscheck.py)

setup() {
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".[test]"
}

setup_boundscheck() {
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # A regular install, not an editable one: the checked extension is built into the wheel and
    # lives in $venv only, so the in-place build that .venv imports is never replaced. setup.py
    # writes the checked build's C file under build/boundscheck/ for the same reason.
    # pip rebuilds a project given as a folder on every install, so the build is never stale.
    VSE_RECSYS_BOUNDSCHECK=1 "$venv/bin/python" -m pip install --quiet ".[test]"
}

bench_setup() {
    setup
    "$venv/bin/python" -m pip install --quiet -e ".[bench,test]" wheel
    "$venv/bin/python" -c "import lightfm" 2>/dev/null && return
    # LightFM 1.17 builds neither under pip's build isolation nor under any PEP 517 build: its
    # setup.py assigns to __builtins__.__LIGHTFM_SETUP__, and __builtins__ is a dict there
    # (lyst/lightfm#687). So: let pip fetch and unpack the sdist (--no-clean keeps the unpacked
    # folder after the expected metadata failure), fix that one line, build without isolation.
    local work src
    work="$(mktemp -d)"
    TMPDIR="$work" "$venv/bin/python" -m pip download --quiet --no-clean --no-deps \
        --no-build-isolation lightfm==1.17 -d "$work" >/dev/null 2>&1 || true
    src="$(ls -d "$work"/pip-download-*/lightfm_* | head -n 1)"
    sed -i 's/^__builtins__\.__LIGHTFM_SETUP__ = True/import builtins; builtins.__LIGHTFM_SETUP__ = True/' \
        "$src/setup.py"
    "$venv/bin/python" -m pip install --quiet --no-build-isolation "$src"
    rm -rf "$work"
}

case "${1:-}" in
    demo) shift; venv="${VSE_RECSYS_VENV:-.venv}"; setup; exec "$venv/bin/vse-recsys" demo "$@" ;;
    test) shift; venv="${VSE_RECSYS_VENV:-.venv}"; setup; exec "$venv/bin/python" -m pytest "$@" ;;
    test-boundscheck)
        shift
        venv="${VSE_RECSYS_BOUNDSCHECK_VENV:-.venv-boundscheck}"
        setup_boundscheck
        # The pytest script (not `python -m pytest`, which would put the source folder first on
        # sys.path) imports the installed, checked package; tests/test_boundscheck.py fails if
        # it is not. An exception inside a nogil helper cannot propagate and is reported as
        # "unraisable": treat that as a failure too.
        VSE_RECSYS_BOUNDSCHECK=1 exec "$venv/bin/pytest" -p no:cacheprovider \
            -W error::pytest.PytestUnraisableExceptionWarning "${KERNEL_TESTS[@]}" "$@" ;;
    bench-setup) venv="${VSE_RECSYS_VENV:-.venv}"; bench_setup ;;
    *) echo "usage: ./run.sh demo [options] | ./run.sh test [pytest options]" \
            "| ./run.sh test-boundscheck [pytest options] | ./run.sh bench-setup" >&2; exit 2 ;;
esac
