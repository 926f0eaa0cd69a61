"""Evaluation tasks: labelled multiple-choice accuracy and fidelity to the unreduced model."""
