#!/usr/bin/env bash
# Run the test suite in .venv after scripts/setup.sh. Extra arguments go to pytest,
# for example: scripts/test.sh -m "not slow" -x
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

"$repo_root/scripts/setup.sh"

venv_python="$repo_root/.venv/bin/python"
# Spark workers must run the venv's interpreter, which has synthspark and its dependencies.
export PYSPARK_PYTHON="$venv_python"
export PYSPARK_DRIVER_PYTHON="$venv_python"
# .jars/ exists only when setup.sh fell back to Maven. A folder set by the caller wins.
if [[ -z "${SYNTHSPARK_JARS_DIR:-}" && -d "$repo_root/.jars" ]]; then
  export SYNTHSPARK_JARS_DIR="$repo_root/.jars"
fi

status=0
"$venv_python" -m pytest -q "$@" || status=$?
# pytest exits with 5 when it collected no tests, and a run that tested nothing must not pass.
if [[ $status -eq 5 ]]; then
  echo "test.sh: error: pytest collected no tests (exit 5). Check that tests/ contains test_*.py files and that any -k or -m filter matches some tests." >&2
  exit 1
fi
exit "$status"
