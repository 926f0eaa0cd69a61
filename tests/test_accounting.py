"""One token accounting (autoprune/accounting.py): the evaluated and the served lengths keep the same share."""

import pytest

from autoprune.accounting import TokenAccounting
from autoprune.errors import ConfigError
from autoprune.schedule import Schedule


def test_the_floor_is_min_tokens_at_the_served_length_or_one_token_of_the_shortest_sample():
    assert TokenAccounting((256, 1024), 16384, 16).floor == pytest.approx(1 / 256)
    assert TokenAccounting((8192,), 8192, 16).floor == pytest.approx(16 / 8192)
    assert "one token" in TokenAccounting((256,), 16384, 16).floor_reason()
    assert "min_tokens = 16" in TokenAccounting((8192,), 8192, 16).floor_reason()


def test_clamping_raises_small_keeps_to_the_floor_and_keeps_full_layers_and_monotonicity():
    acc = TokenAccounting((256,), 16384, 16)
    s = acc.clamp(Schedule(keep=(1.0, 1.0, 0.5, 0.001, 0.0001), min_tokens=4))
    assert s.keep == (1.0, 1.0, 0.5, 1 / 256, 1 / 256) and s.min_tokens == 16
    assert acc.for_evaluation(s).min_tokens == 1


def test_clamped_schedules_keep_the_same_share_at_every_length():
    acc = TokenAccounting((256, 512, 1024), 16384, 16)
    for keep in [(1.0, 0.3, 0.07, 0.01), (1.0, 1.0, 0.004, 0.004), (1.0, 0.9, 0.5, 0.13)]:
        s = Schedule(keep=keep, min_tokens=16)
        assert acc.agree(s)
        served = acc.shares(s, 16384)
        for v in acc.evaluated:
            assert all(abs(a - b) <= 1 / v for a, b in zip(acc.shares(s, v), served))


def test_without_the_accounting_a_small_sample_and_the_served_length_disagree():
    # the bug the accounting removes: min_tokens = 16 is 6.25 % of 256 tokens but 0.1 % of 16,384
    s = Schedule(keep=(1.0, 0.02), min_tokens=16)
    assert s.tokens_per_layer(256)[1] / 256 == pytest.approx(0.0625)
    assert s.tokens_per_layer(16384)[1] / 16384 == pytest.approx(0.02, abs=1e-4)


@pytest.mark.parametrize("kw", [dict(evaluated=(), served=10, min_tokens=1), dict(evaluated=(0,), served=10, min_tokens=1),
                                dict(evaluated=(10,), served=0, min_tokens=1), dict(evaluated=(10,), served=10,
                                                                                     min_tokens=True)])
def test_bad_counts_are_refused(kw):
    with pytest.raises(ConfigError):
        TokenAccounting(**kw)
