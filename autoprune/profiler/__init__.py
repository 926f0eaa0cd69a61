"""Measuring on the present device: timers, NVML monitoring, per-layer benchmarks, measured latency.

Modules (import them directly; nothing heavy is imported here, torch included):

- :mod:`~autoprune.profiler.timing` — :func:`time_fn`, clocks, :class:`TimingStats`;
- :mod:`~autoprune.profiler.monitor` — :class:`GpuMonitor` (NVML), :class:`NullMonitor`;
- :mod:`~autoprune.profiler.layer_bench` — :func:`profile_shape` (``autoprune profile``);
- :mod:`~autoprune.profiler.environment` — versions, device, Mamba kernels in use;
- :mod:`~autoprune.profiler.random_model` — random-weight NemotronH blocks and models;
- :mod:`~autoprune.profiler.measured` — :class:`MeasuredLatency` (``--measure``).

Predicting (the latency model and what it reads) is :mod:`autoprune.cost`.
"""
