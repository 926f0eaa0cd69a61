"""autoprune profile --stack compiled: the per-layer tables timed on the serving stack."""

import pytest

from autoprune import ConfigError
from autoprune.profiler.layer_bench import profile_shape
from hw_fixtures import TINY

QUICK = {"rep_ms": 1.0, "warmup_ms": 0.0, "min_reps": 2, "max_reps": 3, "retries": 0, "estimate_calls": 1}


def test_an_unknown_stack_is_refused():
    with pytest.raises(ConfigError, match="--stack"):
        profile_shape(TINY, device="cpu", tokens=[64], stack="fast")


@pytest.mark.slow
def test_a_compiled_stack_table_says_so_and_restores_the_blocks():
    table = profile_shape(TINY, device="cpu", tokens=[64], kinds="-", prefix_tokens=8, query_tokens=8,
                          scoring=False, gather=False, head=False, timer_kw=QUICK, stack="compiled")
    assert table.environment["stack"] == "compiled"
    assert table.layers["mlp"].ms[0] > 0
