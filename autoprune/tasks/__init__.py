"""Evaluation tasks: labelled multiple-choice accuracy and fidelity to the unreduced model.

The JSONL format is documented in :mod:`autoprune.tasks.records`; :func:`build_evaluator` is the search's entry point.
"""

from .build import build_evaluator
from .evaluate import AccuracyEvaluator, FidelityEvaluator, bootstrap_ci, kernels_flag, reduced_logits
from .prefix_cache import PrefixCache, prefix_of
from .prepared import PreparedGroup, PreparedSet, QAModel, group_samples
from .records import MCRecord, RecordError, load_jsonl, parse_record, write_jsonl

__all__ = [
    "build_evaluator",
    "AccuracyEvaluator", "FidelityEvaluator", "bootstrap_ci", "kernels_flag", "reduced_logits",
    "PrefixCache", "prefix_of",
    "PreparedGroup", "PreparedSet", "QAModel", "group_samples",
    "MCRecord", "RecordError", "load_jsonl", "parse_record", "write_jsonl",
]
