"""spark-submit entry point: the same arguments as the ``synthspark`` command.

    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/synthspark_job.py \
        run conf/berka.yaml --source ../shared/datasets/berka --output out/berka

The session takes the master, settings and JARs given to spark-submit (see
``synthspark.session.get_spark``). The driver imports the synthspark package
from its Python environment. When it is not installed there, for example in a
Databricks job that runs this file from the synced repository, it is imported
from the repository that contains this file.
"""

import os
import sys

try:
    import synthspark  # noqa: F401 - only checks that the package is importable
except ModuleNotFoundError:
    # NOTE: untested on Databricks, where __file__ or sys.argv[0] is assumed to be this file's workspace path.
    script = globals().get("__file__") or sys.argv[0]
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(script))))

from synthspark.cli import main  # noqa: E402 - after the import path fallback above

if __name__ == "__main__":
    raise SystemExit(main())
