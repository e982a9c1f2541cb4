"""Scoring on benchmarks: the reference code's settings per benchmark (`reference_settings`), the
evaluation run (`runner`), the oracle of proposal quality, and the metrics."""

from ..exports import lazy

EXPORTS = {"evaluate": "runner", "EvaluationReport": "runner", "benchmark_settings": "reference_settings", "compute_metrics": "metrics"}
__getattr__, __dir__ = lazy(__name__, EXPORTS)
__all__ = sorted(EXPORTS)
