#!/usr/bin/env bash
# `make test-deps`: the core suite against the edges of the ranges pyproject.toml declares.
#
#   newest  every dependency at the newest version the ranges allow today (the lock is ignored), so
#           the next upstream release that breaks us fails here before a user finds it
#   lowest  the runtime dependencies (redis, anyio, pydantic, typer, uvloop, protobuf, rich) at the
#           lowest versions the ranges allow (uv's --resolution lowest-direct); the dev tools are
#           resolved around them
#
# Each edge gets its own venv (.venv-newest, .venv-lowest) and runs pytest without the slow tests
# and the chaos suite (those run in `make test`, on the locked versions). ruff and mypy run only on
# the lock: their verdicts depend on the versions of the typing stubs, not on what users get.
# Usage: scripts/test-deps.sh [newest|lowest]... (default: both). Needs uv (the Makefile brings it).
set -euo pipefail

cd "$(dirname "$0")/.."

UV=${UV:-uv}
PYTHON=${PYTHON:-python3}
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 UV_NATIVE_TLS=1  # as the Makefile: see there
PYTEST_ARGS=${PYTEST_ARGS:-"-q -m 'not slow' --ignore=tests/chaos"}

edges=("$@")
[ ${#edges[@]} -gt 0 ] || edges=(newest lowest)

run_edge() {
  local edge=$1 venv=.venv-$1
  local -a resolve
  local warn=""
  printf '\n==> %s: creating %s\n' "$edge" "$venv"
  "$UV" venv --quiet --allow-existing --python "$PYTHON" "$venv"
  case $edge in
    newest)
      resolve=(--resolution highest --upgrade)
      ;;
    lowest)
      # Pin the project's own runtime dependencies to their lowest allowed versions, then let the
      # dev tools (pytest, fastapi, ...) resolve to whatever works with those pins.
      "$UV" pip compile --quiet --python "$venv/bin/python" --resolution lowest-direct \
        --no-header --output-file "$venv/lowest-runtime.txt" pyproject.toml
      resolve=(--constraint "$venv/lowest-runtime.txt" --upgrade)
      # Old releases call APIs their newer neighbours deprecate (typer 0.12 and click 8.3, fastapi
      # and pydantic 2.6): a deprecation is not a break, so only here it is not an error.
      warn="-W ignore::DeprecationWarning"
      ;;
    *)
      echo "test-deps: unknown edge '$edge' (newest or lowest)" >&2
      return 2
      ;;
  esac
  # editable_mode=compat comes from [tool.uv] in pyproject.toml, as for `uv sync`
  "$UV" pip install --quiet --python "$venv/bin/python" "${resolve[@]}" \
    -e '.[dev]'
  printf '==> %s: ' "$edge"
  "$venv/bin/python" - <<'PY'
from importlib.metadata import version

names = ["redis", "hiredis", "anyio", "pydantic", "typer", "uvloop", "protobuf", "rich"]
print(", ".join(f"{n} {version(n)}" for n in names))
PY
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
  eval "$venv/bin/python -m pytest $warn $PYTEST_ARGS"
}

for edge in "${edges[@]}"; do
  run_edge "$edge"
done
