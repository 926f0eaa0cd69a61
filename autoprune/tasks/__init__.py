"""Evaluation tasks for any model: labelled multiple-choice accuracy and fidelity to the
unreduced model, the JSONL record format (:mod:`autoprune.tasks.records`), prepared evaluation
sets, and the prefix activation cache. Model sources (:mod:`autoprune.models`) build evaluators
from these.
"""

from .evaluate import (
    AccuracyEvaluator,
    FidelityEvaluator,
    bootstrap_ci,
    kernels_flag,
    reduced_logits,
)
from .prefix_cache import PrefixCache, prefix_of
from .prepared import PreparedGroup, PreparedSet, QAModel, group_samples
from .records import MCRecord, RecordError, load_jsonl, parse_record, write_jsonl

__all__ = [
    "AccuracyEvaluator", "FidelityEvaluator", "bootstrap_ci", "kernels_flag", "reduced_logits",
    "PrefixCache", "prefix_of",
    "PreparedGroup", "PreparedSet", "QAModel", "group_samples",
    "MCRecord", "RecordError", "load_jsonl", "parse_record", "write_jsonl",
]
