"""The per-kind cost form (floor + throughput, fitted transition) and the registry of layer kinds."""

import math

import pytest

from autoprune.cost.kinds import (
    KindCost,
    KindSpec,
    fit_kind_cost,
    kind_spec,
    register_kind,
    softmax_ms,
    unregister_kind,
)
from autoprune.cost.profile_table import KIND_NAMES
from autoprune.errors import ConfigError


def test_gpu_time_is_floor_plus_compute_plus_memory_by_hand():
    c = KindCost(host_ms=1.0, gpu_floor_ms=0.1, compute=0.5, memory=0.25, beta=4.0)
    # 1e12 FLOP at 100 TFLOP/s · 0.5 = 20 ms; 1e9 B at 1000 GB/s · 0.25 = 4 ms; + 0.1 ms floor
    assert c.throughput_ms(1e12, 1e9, 100.0, 1000.0) == pytest.approx(24.0)
    assert c.gpu_ms(1e12, 1e9, 100.0, 1000.0) == pytest.approx(24.1)


def test_a_call_timed_alone_is_the_soft_maximum_of_host_floor_and_gpu_time_by_hand():
    # beta = 1: the two add; beta = 2: the Euclidean norm; large beta: the larger one
    assert softmax_ms(3.0, 4.0, 1.0) == pytest.approx(7.0)
    assert softmax_ms(3.0, 4.0, 2.0) == pytest.approx(5.0)
    assert softmax_ms(3.0, 4.0, 32.0) == pytest.approx(4.0, rel=1e-3)
    c = KindCost(host_ms=3.0, gpu_floor_ms=0.0, compute=1.0, memory=math.inf, beta=2.0)
    # 4e12 FLOP at 1000 TFLOP/s = 4 ms of GPU time, a 3 ms floor: sqrt(9 + 16) = 5 ms
    assert c.call_ms(4e12, 1e12, 1000.0, 1000.0) == pytest.approx(5.0)


def test_an_absent_term_costs_nothing():
    c = KindCost(host_ms=0.0, gpu_floor_ms=0.0, compute=math.inf, memory=0.5)
    assert c.throughput_ms(1e15, 1e9, 100.0, 1000.0) == pytest.approx(2.0)


def test_small_token_counts_sit_on_the_floor_large_ones_on_the_throughput():
    c = KindCost(host_ms=1.0, gpu_floor_ms=0.05, compute=0.5, memory=0.5, beta=8.0)
    per_token = 1e7  # FLOP per token: 0.2 µs per token at 100 TFLOP/s · 0.5
    small = c.call_ms(100 * per_token, 0, 100.0, 1000.0)  # GPU: 0.05 + 0.02 ms
    large = c.call_ms(100_000 * per_token, 0, 100.0, 1000.0)  # GPU: 0.05 + 20 ms
    assert small == pytest.approx(1.0, rel=1e-3)  # the host floor
    assert large == pytest.approx(20.05, rel=1e-3)


def test_transfer_scales_the_gpu_floor_by_the_clock_and_the_host_by_its_ratio():
    c = KindCost(host_ms=1.0, gpu_floor_ms=0.2, compute=0.5, memory=0.5)
    t = c.transfer(clock_ratio=2.0, host_ratio=1.5)
    assert (t.gpu_floor_ms, t.host_ms, t.compute, t.memory) == (0.1, 1.5, 0.5, 0.5)


def test_fit_recovers_a_known_form_from_synthetic_timings():
    truth = KindCost(host_ms=1.3, gpu_floor_ms=0.05, compute=0.3, memory=0.6, beta=8.0)
    tokens = [128 * 2 ** (i / 2) for i in range(18)]
    flops = [2e7 * n + 1e3 * n * n for n in tokens]  # a linear and a quadratic part: both terms identifiable
    nbytes = [5e6 + 3e4 * n for n in tokens]
    ms = [truth.call_ms(f, b, 989.4, 3350.0) for f, b in zip(flops, nbytes)]
    fit, err = fit_kind_cost(tokens, ms, flops, nbytes, 989.4, 3350.0)
    assert err < 0.01
    assert fit.host_ms == pytest.approx(1.3, rel=0.03)
    assert fit.compute == pytest.approx(0.3, rel=0.05)
    for f, b in zip(flops, nbytes):
        assert fit.call_ms(f, b, 989.4, 3350.0) == pytest.approx(truth.call_ms(f, b, 989.4, 3350.0), rel=0.02)
        g = truth.gpu_ms(f, b, 989.4, 3350.0)
        if g >= truth.host_ms:  # under the floor the GPU part is hidden: identified only above it
            assert fit.gpu_ms(f, b, 989.4, 3350.0) == pytest.approx(g, rel=0.05)


def test_fit_ignores_points_left_of_the_minimum():
    # Slower calls below the plateau (another code path) must not raise the floor.
    tokens = [100, 200, 400, 800, 1600, 3200, 6400]
    ms = [2.0, 2.0, 1.0, 1.0, 1.6, 3.2, 6.4]
    flops = [1e9 * n for n in tokens]
    fit, _ = fit_kind_cost(tokens, ms, flops, [0.0] * len(tokens), 1000.0, 1000.0)
    assert fit.host_ms == pytest.approx(1.0, rel=0.05)


def test_the_builtin_kinds_are_registered_with_their_table_names():
    for letter, name in {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}.items():
        assert kind_spec(letter).name == name and KIND_NAMES[letter] == name


def test_a_new_kind_is_added_by_registering_it_alone():
    spec = KindSpec(letter="@", name="test_kind_at", flops=lambda shape, n: 2.0 * n, nbytes=lambda shape, n: 0.0,
                    prior=KindCost(host_ms=0.1, gpu_floor_ms=0.0, compute=1.0, memory=1.0))
    try:
        register_kind(spec)
        assert kind_spec("@") is spec and KIND_NAMES["@"] == "test_kind_at"
        with pytest.raises(ConfigError, match="registered already"):
            register_kind(spec)
    finally:
        unregister_kind("@")
    assert "@" not in KIND_NAMES


def test_an_unknown_kind_names_the_registered_ones():
    with pytest.raises(ConfigError, match="register_kind"):
        kind_spec("#")


def test_a_kind_name_cannot_be_taken_twice():
    spec = KindSpec(letter="%", name="mamba", flops=lambda s, n: 0.0, nbytes=lambda s, n: 0.0,
                    prior=KindCost(host_ms=0.1, gpu_floor_ms=0.0, compute=1.0, memory=1.0))
    with pytest.raises(ConfigError, match="taken by letter 'M'"):
        register_kind(spec)


@pytest.mark.parametrize("field,value", [("host_ms", -1.0), ("gpu_floor_ms", math.nan), ("compute", 0.0),
                                         ("beta", 0.5), ("beta", 100.0)])
def test_a_bad_form_parameter_is_refused_by_name(field, value):
    kw = dict(host_ms=1.0, gpu_floor_ms=0.0, compute=0.5, memory=0.5, beta=4.0)
    kw[field] = value
    with pytest.raises(ConfigError, match=field):
        KindCost(**kw)


def test_form_round_trips_through_its_dict():
    c = KindCost(host_ms=1.0, gpu_floor_ms=0.1, compute=math.inf, memory=0.5, beta=3.0)
    assert KindCost.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown"):
        KindCost.from_dict({**c.to_dict(), "extra": 1})
