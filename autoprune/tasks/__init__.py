"""Evaluation tasks: labelled multiple-choice accuracy and fidelity to the unreduced model.

See ``README.md`` in this folder for the JSONL format and how the pieces fit together.
"""

from .build import build_evaluator
from .evaluate import AccuracyEvaluator, FidelityEvaluator, bootstrap_ci, kernels_flag, reduced_logits
from .prepared import PreparedGroup, PreparedSet, QAModel, group_samples
from .records import MCRecord, RecordError, load_jsonl, parse_record, write_jsonl

__all__ = [
    "build_evaluator",
    "AccuracyEvaluator", "FidelityEvaluator", "bootstrap_ci", "kernels_flag", "reduced_logits",
    "PreparedGroup", "PreparedSet", "QAModel", "group_samples",
    "MCRecord", "RecordError", "load_jsonl", "parse_record", "write_jsonl",
]
