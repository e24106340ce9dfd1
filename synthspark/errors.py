"""Exceptions raised by synthspark.

Every error states what is wrong, where (``table.column``), shows example values
when there are any, and tells how to fix it.
"""

from __future__ import annotations


class SynthsparkError(Exception):
    """Base class of every error that synthspark raises on purpose."""


class ConfigError(SynthsparkError):
    """The configuration is invalid: unknown keys, impossible settings, bad references."""


class SourceDataError(SynthsparkError):
    """The source data breaks what the configuration declares (keys, formats, orphans)."""


class ModelError(SynthsparkError):
    """A fitted model directory is missing, incomplete or from an incompatible version."""


class GenerationError(SynthsparkError):
    """The fitted model cannot generate what is asked, such as more keys than the key format holds."""


class OutputError(SynthsparkError):
    """The output location cannot be written as configured."""


def format_examples(values: list[object], limit: int = 5) -> str:
    """Render up to ``limit`` example values for an error message."""
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown if shown else "(none)"
