import math
import subprocess
import sys

import pytest

from autoprune.errors import AutopruneError
from autoprune.profiler.monitor import GpuMonitor, MonitorSample, decode_clock_event_reasons
from autoprune.profiler.timing import (
    METHOD_CUDA_EVENTS,
    METHOD_WALL_CLOCK,
    TimingStats,
    WallClock,
    default_clock,
    rotation_count,
    summarize,
    time_fn,
)
from hw_fixtures import FakeNvml, ScriptedClock


FIRST, EST = 1, 3  # time_fn's first call and estimate calls (defaults)


def phases(estimate=1.0, attempts=()):
    """Script: first + estimate calls take ``estimate`` ms, then each attempt's list of durations."""
    seq = [estimate] * (FIRST + EST)
    for a in attempts:
        seq.extend(a)
    return lambda k: seq[k] if k < len(seq) else estimate


NOISY = [1.0, 2.0] * 5


TIGHT = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.0, 1.01, 0.99]


class SlowdownMonitor:
    """Reports the given reason masks, one per snapshot, then the last one forever."""

    def __init__(self, masks):
        self.masks = list(masks)
        self.snapshots = 0

    def snapshot(self):
        m = self.masks.pop(0) if len(self.masks) > 1 else self.masks[0]
        self.snapshots += 1
        return MonitorSample(available=True, clock_event_reasons=decode_clock_event_reasons(m))

    def energy_window(self, run, per_call_ms):
        run(4)
        return MonitorSample(available=True, window_s=1.2, calls=4, energy_j=100.0)


def timed(clock, **kw):
    kw.setdefault("warmup_ms", 0.0)
    kw.setdefault("rep_ms", 10.0)
    return time_fn(lambda: None, clock=clock, **kw)


# ------------------------------------------------------------------ stats
def test_summarize_gives_median_quantiles_mean_and_spread():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0], METHOD_CUDA_EVENTS)
    assert (s.median, s.mean, s.n, s.unit) == (3.0, 3.0, 5, "ms")
    assert s.p20 == pytest.approx(1.8) and s.p80 == pytest.approx(4.2)
    assert s.spread == pytest.approx((4.2 - 1.8) / 3.0)


def test_stats_refuse_unknown_method_and_bad_values():
    with pytest.raises(AutopruneError, match="method"):
        summarize([1.0], "stopwatch")
    with pytest.raises(AutopruneError, match="finite"):
        summarize([1.0, float("nan")], METHOD_CUDA_EVENTS)
    with pytest.raises(AutopruneError):
        TimingStats(median=-1, p20=0, p80=0, mean=0, n=1, spread=0, method=METHOD_CUDA_EVENTS)


# ------------------------------------------------------------------ timer
def test_counts_are_derived_from_the_quick_estimate():
    clock = ScriptedClock(lambda k: 2.0)
    s = time_fn(lambda: None, clock=clock, warmup_ms=10.0, rep_ms=100.0, min_reps=5, max_reps=1000)
    # first + 3 estimate calls, ceil(10/2)=5 warm-up calls, ceil(100/2)=50 timed calls
    assert s.n == 50
    assert clock.calls == FIRST + EST + 5 + 50
    assert s.attempts == 1 and s.flags == () and s.median == 2.0


def test_repeat_count_is_clamped():
    clock = ScriptedClock(lambda k: 50.0)
    assert timed(clock, rep_ms=100.0, min_reps=7).n == 7
    clock = ScriptedClock(lambda k: 0.001)
    assert timed(clock, rep_ms=100.0, max_reps=40).n == 40


def test_rotation_passes_cycling_indices():
    got = []
    clock = ScriptedClock(lambda k: 1.0)
    time_fn(lambda i: got.append(i), rotations=3, clock=clock, warmup_ms=0.0, rep_ms=5.0)
    assert set(got) == {0, 1, 2}
    assert got[:6] == [0, 1, 2, 0, 1, 2]


def test_noisy_measurement_is_measured_again_and_kept_when_clean():
    clock = ScriptedClock(phases(attempts=[NOISY, TIGHT]))
    s = timed(clock, max_spread=0.05, retries=2)
    assert s.attempts == 2
    assert s.flags == ()
    assert s.median == pytest.approx(1.0, abs=0.01)


def test_persistently_noisy_measurement_is_flagged_after_bounded_retries():
    noisier = [1.0, 3.0] * 5
    clock = ScriptedClock(phases(attempts=[noisier, NOISY, noisier]))
    s = timed(clock, max_spread=0.05, retries=2)
    assert s.attempts == 3
    assert "high-spread" in s.flags
    # the attempt with the smallest spread is the one kept
    assert s.spread == pytest.approx(summarize(NOISY, METHOD_CUDA_EVENTS).spread)


def test_zero_retries_means_one_attempt():
    clock = ScriptedClock(phases(attempts=[NOISY]))
    s = timed(clock, max_spread=0.05, retries=0)
    assert s.attempts == 1 and "high-spread" in s.flags


def test_thermal_slowdown_triggers_a_remeasure():
    mon = SlowdownMonitor([0x20, 0x0])  # sw_thermal_slowdown, then clean
    clock = ScriptedClock(phases(attempts=[TIGHT, TIGHT]))
    s = timed(clock, monitor=mon, retries=2)
    assert s.attempts == 2 and mon.snapshots == 2
    assert s.flags == ()


def test_slowdown_that_persists_is_flagged():
    mon = SlowdownMonitor([0x40])  # hw_thermal_slowdown every time
    clock = ScriptedClock(phases(attempts=[TIGHT, TIGHT, TIGHT]))
    s = timed(clock, monitor=mon, retries=2)
    assert s.attempts == 3
    assert "clock-slowdown" in s.flags
    assert "hw_thermal_slowdown" in s.monitor.clock_event_reasons


def test_power_cap_is_flagged_but_not_remeasured():
    mon = SlowdownMonitor([0x4])  # sw_power_cap: the steady state of a card at its power limit
    clock = ScriptedClock(phases(attempts=[TIGHT]))
    s = timed(clock, monitor=mon, retries=2)
    assert s.attempts == 1
    assert s.flags == ("power-capped",)


def test_energy_window_gives_energy_per_call():
    mon = SlowdownMonitor([0x0])
    clock = ScriptedClock(phases(attempts=[TIGHT]))
    s = timed(clock, monitor=mon, energy=True)
    assert s.energy_per_call_j == pytest.approx(25.0)


def test_timer_refuses_bad_arguments():
    for kw in ({"min_reps": 0}, {"retries": -1}, {"max_spread": float("nan")}, {"rotations": 0},
               {"min_reps": 10, "max_reps": 5}):
        with pytest.raises(AutopruneError):
            time_fn(lambda: None, clock=ScriptedClock(lambda k: 1.0), **kw)


def test_cpu_fallback_uses_the_wall_clock_and_says_so():
    clock = default_clock("cpu")
    assert isinstance(clock, WallClock)
    s = time_fn(lambda: sum(range(1000)), clock=clock, rep_ms=2.0, warmup_ms=0.5)
    assert s.method == METHOD_WALL_CLOCK and s.is_fallback
    assert any("wall clock" in n for n in s.notes)
    assert s.median > 0


def test_wall_clock_measures_elapsed_time_with_an_injected_timer():
    ticks = iter([0.0, 0.002, 1.0, 1.005])
    clock = WallClock(timer=lambda: next(ticks))
    assert clock.time_calls(lambda i: None, [0, 1]) == pytest.approx([2.0, 5.0])


def test_timer_reports_monitor_unavailable_as_a_flag_and_note():
    clock = ScriptedClock(phases(attempts=[TIGHT]))
    s = timed(clock, monitor=GpuMonitor(nvml=FakeNvml(fail_init=True)))
    assert "monitor-unavailable" in s.flags
    assert any("NVML unavailable" in n for n in s.notes)


def test_rotation_count_covers_twice_the_l2():
    l2 = 50 * 2**20
    assert rotation_count(200 * 2**20, l2) == 1
    assert rotation_count(10 * 2**20, l2) == 10
    assert rotation_count(1024, l2) == 16  # capped
    assert rotation_count(0, l2) == 1


def test_import_autoprune_does_not_import_optional_packages():
    code = ("import sys, autoprune, autoprune.profiler.timing, autoprune.profiler.monitor, autoprune.cost.gpus, "
            "autoprune.cost.latency, autoprune.cost.roofline, autoprune.cost.profile_table, autoprune.cli; "
            "bad = [m for m in ('pynvml', 'pandas', 'matplotlib', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spread_is_zero_for_identical_durations():
    s = summarize([3.0] * 4, METHOD_CUDA_EVENTS)
    assert s.spread == 0.0 and math.isfinite(s.spread)


def test_every_clock_method_is_accepted_by_timing_stats_and_tables(tmp_path):
    from autoprune.cost.profile_table import ProfileTable
    from autoprune.cost.shapes import NEMOTRON_H_8B
    from autoprune.profiler.timing import METHODS, summarize
    from hw_fixtures import linear_table

    for method in METHODS:
        assert summarize([1.0, 1.1, 0.9], method).method == method
        t = linear_table(NEMOTRON_H_8B, method=method)
        assert ProfileTable.load(t.save(tmp_path / "t.json")).method == method


# ---------------------------------------------------------------- repeats
def scaled(attempt, factor):
    return [d * factor for d in attempt]


def test_repeats_always_measure_that_many_times_and_report_their_agreement():
    clock = ScriptedClock(phases(attempts=[TIGHT, scaled(TIGHT, 1.02), TIGHT]))
    s = timed(clock, repeats=3, retries=2)
    assert s.attempts == 3 and s.flags == ()
    assert s.repeat_spread == pytest.approx(0.02, rel=1e-6) and not s.noisy


def test_repeats_that_drift_apart_are_remeasured_then_flagged_noisy():
    # Each batch is tight, but the machine slows down from one batch to the next (load).
    drifting = [scaled(TIGHT, f) for f in (1.0, 1.3, 1.7, 2.2, 2.9)]
    s = timed(ScriptedClock(phases(attempts=drifting)), repeats=3, retries=2, max_spread=0.10)
    assert s.attempts == 5
    assert "noisy-repeats" in s.flags and "high-spread" not in s.flags and s.noisy
    # the best window of three consecutive medians: 1.3, 1.7, 2.2
    assert s.repeat_spread == pytest.approx((2.2 - 1.3) / 1.7, rel=1e-6)


def test_repeats_that_settle_stop_once_a_window_agrees():
    settling = [scaled(TIGHT, 2.0), TIGHT, TIGHT, TIGHT]
    s = timed(ScriptedClock(phases(attempts=settling)), repeats=3, retries=2)
    assert s.attempts == 4 and s.flags == () and s.repeat_spread == pytest.approx(0.0)


def test_one_repeat_has_no_repeat_spread():
    s = timed(ScriptedClock(phases(attempts=[TIGHT])))
    assert s.repeat_spread is None and s.to_dict()["repeat_spread"] is None


def test_repeats_must_be_a_positive_integer():
    with pytest.raises(AutopruneError, match="repeats"):
        timed(ScriptedClock(lambda k: 1.0), repeats=0)
