"""synthspark: multi-table synthetic data on Apache Spark.

The pipeline is fit -> generate -> evaluate -> write; see :mod:`synthspark.pipeline`.
"""

from synthspark.config import SynthConfig, load_config
from synthspark.errors import (
    ConfigError,
    ModelError,
    OutputError,
    SourceDataError,
    SynthsparkError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ModelError",
    "OutputError",
    "SourceDataError",
    "SynthConfig",
    "SynthsparkError",
    "__version__",
    "load_config",
]
