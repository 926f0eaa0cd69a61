"""NVML monitoring: clock-event reasons, energy windows, and what a monitor without NVML says."""

import time

import pytest

from autoprune.profiler.monitor import GpuMonitor, MonitorSample, NullMonitor, decode_clock_event_reasons
from hw_fixtures import FakeNvml


def test_reason_bits_decode_by_name():
    assert decode_clock_event_reasons(0x1 | 0x4 | 0x40) == ("gpu_idle", "sw_power_cap", "hw_thermal_slowdown")
    assert decode_clock_event_reasons(0x10000) == ("unknown_0x10000",)
    assert MonitorSample(available=True, clock_event_reasons=("sw_thermal_slowdown",)).slowdown
    assert not MonitorSample(available=True, clock_event_reasons=("gpu_idle", "sw_power_cap")).slowdown


def test_monitor_without_nvml_notes_it_and_does_not_crash():
    mon = GpuMonitor(nvml=FakeNvml(fail_init=True))
    with mon:
        pass
    assert mon.result.available is False
    assert "NVML unavailable" in mon.result.note and "Driver Not Loaded" in mon.result.note
    snap = mon.snapshot()
    assert snap.available is False and snap.note
    ran = []
    assert mon.energy_window(ran.append, 1.0).available is False
    assert ran == []  # nothing to measure, nothing run


def test_monitor_with_the_real_bindings_and_no_driver_notes_it():
    pytest.importorskip("pynvml")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    mon = GpuMonitor()
    with mon:
        pass
    assert mon.result.available is False and "NVML" in mon.result.note


def test_monitor_energy_is_the_counter_delta_in_joules():
    nv = FakeNvml(energy_step_mj=2500)  # each read advances the counter by 2.5 J
    mon = GpuMonitor(nvml=nv, min_window_s=0.0)
    with mon:
        mon.add_calls(5)
    r = mon.result
    assert r.available and r.energy_j == pytest.approx(2.5)
    assert r.energy_per_call_j == pytest.approx(0.5)
    assert r.sm_clock_mhz == 1980 and r.device_name == "NVIDIA H100 80GB HBM3"


def test_energy_window_repeats_the_callable_until_the_window_is_long_enough():
    calls = []
    mon = GpuMonitor(nvml=FakeNvml(), min_window_s=0.05)

    def run(k):
        calls.append(k)
        time.sleep(0.002 * k)

    r = mon.energy_window(run, per_call_ms=2.0)
    assert r.window_s >= 0.05
    assert r.calls == sum(calls) >= 25
    assert r.energy_per_call_j is not None


def test_short_energy_window_is_noted():
    mon = GpuMonitor(nvml=FakeNvml(), min_window_s=10.0)
    with mon:
        pass
    assert "shorter than" in mon.result.note


def test_monitor_collects_reasons_over_the_window():
    mon = GpuMonitor(nvml=FakeNvml(reasons=[0x0, 0x20, 0x0]), min_window_s=0.0)
    with mon:
        mon.sample()
    assert "sw_thermal_slowdown" in mon.result.clock_event_reasons
    assert mon.result.slowdown


def test_null_monitor_says_why():
    assert NullMonitor("no GPU").snapshot().note == "no GPU"
