"""The runtime's profiler ranges: a reduced prefill names its own work, an unreduced one has none."""

from __future__ import annotations

import torch

import autoprune
from autoprune.profiler.ranges import EVIDENCE, GATHER, RANGES, SELECT, range_breakdown
from tiny_models import inputs, progressive, tiny_nemotron_h


def _prefill(model, ids, vm, schedule=None):
    with torch.no_grad():
        if schedule is None:
            model(input_ids=ids)
            return
        with autoprune.reduce(model, schedule, visual_mask=vm):
            model(input_ids=ids)


def test_a_reduced_prefill_times_its_evidence_selection_and_gather_within_the_call():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    sched = progressive(model)
    got = range_breakdown(lambda: _prefill(model, ids, vm, sched), cuda=False)
    n_prunes = len(sched.prune_layers(int(vm[0].sum())))
    assert got.calls[SELECT] == n_prunes and got.calls[GATHER] == n_prunes
    assert got.calls[EVIDENCE] >= 1
    assert all(got.ms[n] > 0 for n in RANGES)
    assert 0 < got.share(*RANGES) < 1  # autoprune's work is part of the call, not all of it


def test_an_unreduced_prefill_and_a_score_free_selector_spend_nothing_in_scoring():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    plain = range_breakdown(lambda: _prefill(model, ids, vm), cuda=False)
    assert plain.calls == {n: 0 for n in RANGES} and plain.total_ms > 0
    stride = progressive(model, selector="uniform_stride")
    got = range_breakdown(lambda: _prefill(model, ids, vm, stride), cuda=False)
    assert got.calls[EVIDENCE] == 0 and got.calls[SELECT] > 0


def test_the_breakdown_serialises_its_ranges_and_total():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    d = range_breakdown(lambda: _prefill(model, ids, vm, progressive(model)), cuda=False).to_dict()
    assert set(d["ms"]) == set(RANGES) and d["device"] == "cpu" and d["total_ms"] > 0
