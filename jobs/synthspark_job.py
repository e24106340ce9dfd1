"""spark-submit entry point: the same arguments as the ``synthspark`` command.

    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/synthspark_job.py \
        run conf/berka.yaml --source ../shared/datasets/berka --output out/berka

The session that spark-submit creates is reused, so --master and --conf given
to spark-submit apply. The synthspark package must be importable by the driver
(installed with pip, or shipped with --py-files).
"""

from synthspark.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
