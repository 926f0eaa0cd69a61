"""Predicting a schedule's cost: model shapes and FLOPs, the GPU registry, measured tables, the latency model.

Modules (import them directly; nothing heavy is imported here, torch included):

- :mod:`~autoprune.cost.shapes` — :class:`ModelShape`, :class:`TokenLayout`, FLOP counts;
- :mod:`~autoprune.cost.gpus` — GPU spec sheets and name resolution (``--gpu a100``);
- :mod:`~autoprune.cost.profile_table` — measured per-layer tables (``autoprune.profile/v1``);
- :mod:`~autoprune.cost.roofline` — the roofline and its calibration on a measured table;
- :mod:`~autoprune.cost.kinds` — the per-layer-kind cost forms (floor + throughput, fitted
  transition) and the registry of kinds (``register_kind``);
- :mod:`~autoprune.cost.transfer` — forms fitted per GPU, their spec-ratio transfer, few-shot calibration;
- :mod:`~autoprune.cost.quick` — the ``autoprune profile --quick`` points (``autoprune.quick/v1``);
- :mod:`~autoprune.cost.uncertainty` — prediction intervals from validation residuals;
- :mod:`~autoprune.cost.latency` — :class:`LatencyModel`, the predicted ``LatencySource``;
- :mod:`~autoprune.cost.ttft` — time to first token: vision encoder, EVS, prefill.

Measuring (timers, NVML, the per-layer benchmark, measured latency) is :mod:`autoprune.profiler`.
"""

# Registers the ModelShape conversions of the GraniteMoeHybrid, Falcon-H1, Zamba2 and Jamba
# families with autoprune.cost.shapes (pure Python; transformers is imported only when used).
from . import hybrid_shapes  # noqa: E402, F401
