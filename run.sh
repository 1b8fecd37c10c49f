#!/usr/bin/env bash
# Set up (or reuse) the local virtual environment with pinned dependencies, then
#   ./run.sh main  [snakemake arguments]   run the workflow (default: embedded config)
#   ./run.sh test  [pytest arguments]      run the whole test suite
#   ./run.sh env                           only set up the environment
set -euo pipefail
cd "$(dirname "$0")"

venv=${SFH_VENV:-.venv}

find_python() {
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$candidate"
            return
        fi
    done
    echo "run.sh: Python >= 3.11 is needed (set PYTHON=/path/to/python3.11)" >&2
    exit 1
}

ensure_env() {
    if [ ! -x "$venv/bin/python" ]; then
        "$(find_python)" -m venv "$venv"
    fi
    local stamp
    stamp="$venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        local pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
        # The CPU build of torch first: an unpinned torch requirement would pull a CUDA build.
        "${pip[@]}" torch==2.13.0
        "${pip[@]}" -r requirements.lock
        "${pip[@]}" --no-deps -e .
        rm -f "$venv"/.installed-*
        touch "$stamp"
    fi
    export PATH="$(cd "$venv" && pwd)/bin:$PATH"
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
    main) ensure_env; exec snakemake --profile profiles/local "$@" ;;
    test) ensure_env; exec python -m pytest "$@" ;;
    env) ensure_env ;;
    *) echo "usage: ./run.sh {main|test|env} [arguments]" >&2; exit 2 ;;
esac
