"""`autoprune profile` on the four new families: every layer kind of their shapes is timed (P, S
and A by the family's own layer, the others by NemotronH's block at the shape's widths), the
scoring of their Mamba2/attention mixers too, and the latency model reads the table."""

import pytest
import torch
from tiny_hybrids import FAMILIES

from autoprune.cost.latency import LatencyModel
from autoprune.cost.shapes import ModelShape, TokenLayout
from autoprune.profiler.layer_bench import activation_bytes, profile_shape
from autoprune.profiler.random_model import build_block
from autoprune.schedule import Schedule

QUICK = {"rep_ms": 1.0, "warmup_ms": 0.0, "min_reps": 2, "max_reps": 3, "retries": 0, "estimate_calls": 1}


def _shape(family):
    return ModelShape.from_config(FAMILIES[family]().config, dtype="float32")


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in ("granitemoehybrid", "zamba2")
                                    else f for f in FAMILIES])
def test_a_cpu_profile_of_each_family_times_every_kind_and_the_latency_model_reads_it(family, tmp_path):
    shape = _shape(family)
    torch.manual_seed(0)
    t = profile_shape(shape, device="cpu", tokens=[64], prefix_tokens=8, query_tokens=8, timer_kw=QUICK)
    assert t.missing_kinds() == [] and t.skipped == ()
    assert set(t.scoring) == {"attention", "mamba", "mamba_decay"}  # S: shared attention; A: Mamba1
    t.save(tmp_path / "cpu" / f"{shape.name}.json")
    m = LatencyModel(shape, TokenLayout(prefix=8, visual=80, query=8), "cpu", search_dirs=[tmp_path])
    n = shape.num_layers
    est = m.estimate(Schedule(keep=(1.0, 1.0) + (0.5,) * (n - 2)))
    assert est.source == "table" and est.latency_ms > 0 and est.baseline_ms > 0


@pytest.mark.parametrize("family,kind", [("falcon_h1", "P"), ("zamba2", "S"), ("jamba", "A")])
def test_the_family_block_runs_one_layer_of_its_kind_on_hidden_states(family, kind):
    shape = _shape(family)
    block, _ = build_block(shape, kind, "cpu", torch.float32)
    x = torch.randn(1, 40, shape.hidden_size)
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert activation_bytes(shape, kind, 40) > activation_bytes(shape, "*", 40) > 0
