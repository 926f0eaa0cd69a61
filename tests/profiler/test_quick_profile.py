"""``profile --quick``'s measurement on the CPU at toy scale: the points, the prefills, the refusals."""

import pytest

from autoprune.cli import main
from autoprune.errors import ConfigError
from autoprune.profiler.quick import quick_profile
from hw_fixtures import TINY_BF16, linear_table

TIMER = {"warmup_ms": 0.0, "rep_ms": 1.0, "min_reps": 2, "max_reps": 2, "retries": 0}


@pytest.mark.slow
def test_quick_profile_times_twelve_layer_calls_and_the_prefills_asked_for():
    source = linear_table(TINY_BF16, gpu="h100-sxm5-80gb")
    q = quick_profile(TINY_BF16, source, gpu_id="h200-sxm-141gb", device="cpu", tokens=(16, 32, 48, 64), prefills=2,
                      visual=48, prefix_tokens=4, query_tokens=4, timer_kw=TIMER)
    assert len(q.points) == 12 and {p.kind for p in q.points} == set("M*-")
    assert sorted({p.tokens for p in q.points}) == [16, 32, 48, 64]
    assert len(q.prefills) == 2 and q.prefills[0].keep == (1.0,) * TINY_BF16.num_layers
    assert min(q.prefills[1].keep) < 1.0 and all(p.ms > 0 for p in q.prefills)
    assert q.source_gpu == "h100-sxm5-80gb" and q.gpu == "h200-sxm-141gb"


def test_quick_profile_refuses_its_own_gpu_as_source_and_too_many_prefills():
    source = linear_table(TINY_BF16, gpu="h200-sxm-141gb")
    with pytest.raises(ConfigError, match="nothing to transfer"):
        quick_profile(TINY_BF16, source, gpu_id="h200-sxm-141gb", device="cpu")
    with pytest.raises(ConfigError, match="0 to 3"):
        quick_profile(TINY_BF16, linear_table(TINY_BF16), gpu_id="h200-sxm-141gb", device="cpu", prefills=4)


def test_profile_quick_without_a_gpu_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["profile", "--quick", "--gpu", "cpu"]) == 2
    assert "--quick calibrates a GPU" in capsys.readouterr().err
