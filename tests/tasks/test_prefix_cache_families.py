"""The prefix activation cache on the two-mixer families (Falcon-H1's parallel layers, Zamba2's
shared-attention layers called with positional inputs): schedules resumed from stored layer
outputs and stored (blended) evidence give the logits of a full run, whatever the blend weights."""

import pytest
import torch

from autoprune.adapters import get_adapter
from autoprune.schedule import Schedule, ScorerConfig
from autoprune.tasks import PrefixCache, reduced_logits
from tiny_hybrids import FAMILIES


class _QA:
    def __init__(self, model):
        self.module = model

    def last_logits(self, x):
        return self.module(inputs_embeds=x).logits[:, -1]


@pytest.mark.parametrize("family", ["falcon_h1", "zamba2"])
def test_logits_with_the_cache_equal_a_full_run_for_other_blend_weights(family):
    model = FAMILIES[family]()
    qa = _QA(model)
    sig = get_adapter(model).signature()
    n = sig.num_layers
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, model.config.hidden_size, generator=g)
    vm = torch.zeros(2, 40, dtype=torch.bool)
    vm[:, 4:32] = True
    cut = 3 if family == "zamba2" else 2
    schedules = [Schedule.identity(n, model=sig)] + [
        Schedule(keep=(1.0,) * cut + (0.4,) * (n - cut), model=sig, min_tokens=2,
                 scorer=ScorerConfig(w_attn=wa, w_mamba=wm, evidence_window=2))
        for wa, wm in ((1.0, 1.0), (0.2, 1.0), (1.0, 0.0), (0.0, 1.0), (0.7, 0.3))]
    cache = PrefixCache(model)
    with torch.inference_mode():
        for s in schedules + schedules[::-1]:  # the second pass resumes from what the first stored
            with cache.resume("b", s, 28):
                cached = reduced_logits(qa, x, vm, s)
            assert torch.equal(cached, reduced_logits(qa, x, vm, s)), s.scorer
    assert cache.stats.layers_skipped > 0
