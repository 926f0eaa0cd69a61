"""A model source for the distributed-search tests: the synthetic model under a checkpoint
fingerprint read from ``AUTOPRUNE_TEST_CHECKPOINT`` (default ``checkpoint-a``), as two hosts with
different checkpoints behind the same path would differ; with ``AUTOPRUNE_TEST_DEVICE_LOG`` set to
a folder, each process that builds it writes its ``CUDA_VISIBLE_DEVICES`` there. Named
``pg_model:source``."""

from __future__ import annotations

import hashlib
import os

from autoprune.models.synthetic import SyntheticSource
from autoprune.schedule import ModelSignature


class CheckpointSynthetic:
    name = "pg_model"
    options = SyntheticSource.options

    def check(self, request) -> None:
        SyntheticSource().check(request)

    def build(self, request):
        inputs = SyntheticSource().build(request)
        log = os.environ.get("AUTOPRUNE_TEST_DEVICE_LOG")
        if log:  # which GPU this worker process was given (tests of --devices)
            with open(os.path.join(log, str(os.getpid())), "w") as f:
                f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"))
        checkpoint = os.environ.get("AUTOPRUNE_TEST_CHECKPOINT", "checkpoint-a")
        old = inputs.evaluator.signature
        sig = ModelSignature(family=old.family, layer_kinds=old.layer_kinds,
                             fingerprint="sha256:" + hashlib.sha256(checkpoint.encode()).hexdigest()[:16])
        for obj in {id(x): x for x in (inputs.evaluator, inputs.latency, inputs.predictor)}.values():
            obj.signature = sig
        return inputs


source = CheckpointSynthetic()
