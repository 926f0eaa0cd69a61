"""The hf model source on tiny random checkpoints written with save_pretrained: the search from the
command line (validated on a held-out file), EVS composition (the model's own EVS first, the
schedule on what is left), the oracles (the unmodified model's logits, physically deleted tokens),
and bad input refused in one line with nothing written.

Each search of 8 trials on the CPU takes seconds (the done-when bound is a minute; asserted)."""

from __future__ import annotations

import hashlib
import json
import time

import hf_checkpoints as H
import pytest
import torch
from tiny_models import oracle_forward

import autoprune
from autoprune import ConfigError, ModelMismatchError, Schedule
from autoprune.cli import main
from autoprune.tasks.records import RecordError, load_jsonl

pytest.importorskip("av")

# The tiny checkpoints' own widths cost nothing on a GPU: their latency is predicted for their
# layer pattern at NemotronH-8B widths and a long-video layout, as the demo's is.
LATENCY = ["--model-option", "latency_widths=nemotron-h-8b", "--model-option", "latency_visual=16384"]


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    d = tmp_path_factory.mktemp("omni")
    H.omni_checkpoint(d / "ckpt", evs_rate=0.5)
    H.video_records(d)
    H.video_records(d, n=2, stem="held", jsonl="held.jsonl", first=3)  # other clips: held out
    return d


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    out = {}
    for family in ("nemotron_h", "bamba"):
        d = tmp_path_factory.mktemp(family)
        H.lm_checkpoint(d / "ckpt", family)
        H.embedding_records(d, hidden=32)
        out[family] = d
    return out


def search(tmp, ckpt, data, *extra, budget="2x"):
    t0 = time.perf_counter()
    rc = main(["search", "--model", str(ckpt), "--data", str(data), "--gpu", "h100", "--budget", budget,
               "--trials", "8", "--out", str(tmp / "runs"), "--no-progress", *LATENCY, *extra])
    assert rc == 0
    return sorted((tmp / "runs").glob("*/pareto/*.json")), time.perf_counter() - t0


def load_omni(ckpt):
    from autoprune.models.hf import load_checkpoint

    return load_checkpoint(str(ckpt), dtype="fp32", device="cpu")


def first_inputs(hf, records):
    """The omni model's inputs for the first record, as the source builds them."""
    from autoprune.models.hf import render_prompt
    from autoprune.models.hf_video import VIDEO_TOKEN
    from autoprune.tasks.records import load_video

    r = records[0]
    frames, meta = load_video(r)
    return hf.front_end(render_prompt(hf.tokenizer, r, VIDEO_TOKEN), frames, meta)


# ------------------------------------------------------------------- searches
# Not marked slow: ~5 s each on the 2-core CPU, and CI must check the done-when minute for all four.
@pytest.mark.parametrize("evs_rate", [0.5, 0.0])
def test_a_search_on_an_omni_checkpoint_exports_schedules_that_load_and_run_on_it(omni, tmp_path, evs_rate):
    paths, seconds = search(tmp_path, omni / "ckpt", omni / "tiny.jsonl", "--model-option", f"evs_rate={evs_rate}")
    print(f"omni search, evs_rate {evs_rate}: {seconds:.1f} s")
    assert paths and seconds < 60
    study = json.loads(next((tmp_path / "runs").glob("*/search.json")).read_text())
    assert study["study"] == "ckpt-h100-2x"
    assert study["model"] == "hf" and study["model_options"]["path"] == str(omni / "ckpt")
    assert study["latency_info"]["evs_rate"] == evs_rate
    before = study["latency_info"]["video_tokens_before_evs"]
    assert study["num_visual"] == (before // 2 if evs_rate else before)  # EVS: fewer tokens enter layer 0
    hf = load_omni(omni / "ckpt")
    hf.set_evs_rate(evs_rate)
    sched = Schedule.load(paths[0], model=autoprune.model_signature(hf.model))
    inputs = first_inputs(hf, load_jsonl(omni / "tiny.jsonl"))
    with torch.no_grad(), autoprune.reduce(hf.model, sched, visual_mask=inputs["input_ids"] == hf.config.image_token_id) as h:
        hf.model(**inputs)
    assert h.num_visual == study["num_visual"]


def test_a_search_with_a_held_out_file_exports_the_front_validated_on_it_with_its_identity(omni, tmp_path):
    held = omni / "held.jsonl"
    paths, seconds = search(tmp_path, omni / "ckpt", omni / "tiny.jsonl", "--validation", str(held))
    print(f"omni search with --validation: {seconds:.1f} s")
    assert paths and seconds < 60
    run = next((tmp_path / "runs").glob("*/pareto.json")).parent
    index = json.loads((run / "pareto.json").read_text())
    assert index["validation"]["n"] == 2 and index["validation"]["metric"] == "accuracy"  # the search's objective
    evaluation = index["provenance"]["evaluation"]
    assert evaluation["validation"] == {"data": str(held.resolve()), "n": 2,
                                        "sha256": hashlib.sha256(held.read_bytes()).hexdigest(),
                                        "disjoint": evaluation["validation"]["disjoint"]}
    assert evaluation["search"]["n"] == 3
    for p in paths:
        m = Schedule.load(p).metrics
        assert m["validated"] and m["n"] == 2 and m["search_n"] == 3 and m["ci_low"] <= m["score"] <= m["ci_high"]
    report = (run / "report.md").read_text()
    assert "Search set vs validation" in report and "validation set of 2 held-out samples" in report


@pytest.fixture(scope="module")
def nemotron_h_search(lms, tmp_path_factory):
    return search(tmp_path_factory.mktemp("search"), lms["nemotron_h"] / "ckpt", lms["nemotron_h"] / "tiny.jsonl")


@pytest.mark.parametrize("family", ["nemotron_h", "bamba"])
def test_a_search_on_a_language_model_with_embedding_records_exports_loadable_schedules(lms, tmp_path, family,
                                                                                          request):
    d = lms[family]
    paths, seconds = (request.getfixturevalue("nemotron_h_search") if family == "nemotron_h"
                      else search(tmp_path, d / "ckpt", d / "tiny.jsonl"))
    print(f"{family} search: {seconds:.1f} s")
    assert paths and seconds < 60
    from autoprune.models.hf import load_checkpoint

    model = load_checkpoint(str(d / "ckpt"), device="cpu").model
    for p in paths:
        Schedule.load(p, model=autoprune.model_signature(model))


def test_apply_runs_an_exported_schedule_on_the_checkpoint_and_refuses_another_checkpoint(lms, nemotron_h_search,
                                                                                          capsys):
    d = lms["nemotron_h"]
    paths, _ = nemotron_h_search
    capsys.readouterr()
    assert main(["apply", "--model", str(d / "ckpt"), "--schedule", str(paths[0]), "--data",
                 str(d / "tiny.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "latency:" in out
    with pytest.raises(ModelMismatchError, match="bamba"):
        from autoprune.search.apply import apply_schedule

        apply_schedule(paths[0], model="hf", model_options={"path": str(lms["bamba"] / "ckpt"),
                                                             "data": str(lms["bamba"] / "tiny.jsonl")})


# --------------------------------------------------------------- EVS oracles
@torch.no_grad()
def test_the_all_ones_schedule_reproduces_the_unmodified_logits_with_evs_on(omni):
    hf = load_omni(omni / "ckpt")
    assert hf.evs_rate == 0.5
    inputs = first_inputs(hf, load_jsonl(omni / "tiny.jsonl"))
    ref = hf.model(**inputs).logits
    sig = autoprune.model_signature(hf.model)
    with autoprune.reduce(hf.model, Schedule.identity(sig.num_layers, model=sig),
                          visual_mask=inputs["input_ids"] == hf.config.image_token_id) as h:
        out = hf.model(**inputs).logits
    assert ref.shape[1] < inputs["input_ids"].shape[1]  # EVS removed tokens before the language model
    assert h.length == ref.shape[1]
    assert (out - ref).abs().max() == 0


@torch.no_grad()
def test_greedy_generation_after_a_reduced_prefill_with_evs_equals_the_deletion_oracle(omni):
    from autoprune.models.hf import embed_after_evs

    hf = load_omni(omni / "ckpt")
    inputs = first_inputs(hf, load_jsonl(omni / "tiny.jsonl"))
    ids = inputs["input_ids"]
    x, vm = embed_after_evs(hf.model, ids, inputs["pixel_values_videos"])  # what the LM gets after EVS
    sig = autoprune.model_signature(hf.model)
    keep = (1.0, 1.0, 1.0, 0.5, 0.5, 0.25)
    sched = Schedule(keep=keep, model=sig, min_tokens=2)
    steps = 4
    with autoprune.reduce(hf.model, sched, visual_mask=ids == hf.config.image_token_id) as h:
        gen = hf.model.generate(**inputs, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                                do_sample=False)
    assert sorted(h.last.selections) == [3, 5]
    lm = hf.model.language_model
    seq = x
    text = (~vm[0]).nonzero().flatten()
    tokens = []
    for _ in range(steps):
        n = seq.shape[1]
        nonvis = torch.cat([text, torch.arange(vm.shape[1], n)])[None]
        deletions = {p: torch.sort(torch.cat([nonvis, sel], 1), 1).values for p, sel in h.last.selections.items()}
        logits, _ = oracle_forward(lm, None, deletions, inputs_embeds=seq)
        t = logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(t)
        seq = torch.cat([seq, lm.get_input_embeddings()(t)], dim=1)
    assert torch.equal(gen[:, ids.shape[1]:], torch.cat(tokens, 1))


@torch.no_grad()
def test_evs_keeps_the_count_compute_retention_mask_keeps(omni):
    from autoprune.adapters.evs import evs_token_count
    from autoprune.models.hf import embed_after_evs

    hf = load_omni(omni / "ckpt")
    inputs = first_inputs(hf, load_jsonl(omni / "tiny.jsonl"))
    pvv = inputs["pixel_values_videos"]
    n_video = int((inputs["input_ids"] == hf.config.image_token_id).sum())
    nt = pvv.shape[1]
    for rate in (0.0, 0.3, 0.75):
        hf.set_evs_rate(rate)
        x, vm = embed_after_evs(hf.model, inputs["input_ids"], pvv)
        assert int(vm.sum()) == evs_token_count(nt, n_video // nt, rate)
        assert x.shape[1] == inputs["input_ids"].shape[1] - n_video + int(vm.sum())


# ------------------------------------------------------------------ bad input
def _refused(tmp_path, argv, error, match, capsys, *, out=True):
    """Exit 2, one error line that says ``match``, nothing written (``out``: the command takes --out)."""
    before = set(tmp_path.iterdir())
    rc = main(argv + (["--out", str(tmp_path / "runs")] if out else []))
    assert rc == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("autoprune ")]
    assert len(lines) == 1 and match in lines[0], err
    assert set(tmp_path.iterdir()) == before


def test_a_directory_that_is_not_a_checkpoint_is_refused_and_nothing_is_written(tmp_path, omni, capsys):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path, ["search", "--model", str(tmp_path / "empty"), "--data", str(omni / "tiny.jsonl"),
                        "--gpu", "h100", "--budget", "2x"], "ConfigError", "not a checkpoint", capsys)


def test_missing_weight_shards_are_named(tmp_path, omni):
    from autoprune.models.hf import resolve_checkpoint

    d = tmp_path / "partial"
    d.mkdir()
    (d / "config.json").write_text((omni / "ckpt" / "config.json").read_text())
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                             "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ConfigError, match="model-00001-of-00002.safetensors"):
        resolve_checkpoint(str(d))


def test_a_repo_id_missing_from_the_local_cache_is_refused_without_a_download(tmp_path, monkeypatch):
    from autoprune.models.hf import resolve_checkpoint

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="never downloads"):
        resolve_checkpoint("nvidia/not-here")


def test_a_checkpoint_of_an_unsupported_family_is_refused_with_the_supported_ones(tmp_path, omni, capsys):
    d = tmp_path / "llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "model.safetensors").write_bytes(b"")
    _refused(tmp_path, ["search", "--model", str(d), "--data", str(omni / "tiny.jsonl"), "--gpu", "h100",
                        "--budget", "2x"], "UnsupportedModelError", "supported: ['bamba', 'falcon_h1', "
                                                                      "'granitemoehybrid', 'jamba', 'lfm2', 'nemotron_h', "
                                                                      "'nemotron_h_omni', 'qwen3_5_text', 'qwen3_next', "
                                                                      "'zamba2']", capsys)


def test_a_video_that_cannot_be_decoded_names_its_file_and_line_and_nothing_is_written(tmp_path, omni, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"video": "broken.mp4", "question": "what colour is the square",
                                                    "choices": ["red", "blue"], "answer": 0}) + "\n")
    _refused(tmp_path, ["search", "--model", str(omni / "ckpt"), "--data", str(tmp_path / "bad.jsonl"), "--gpu",
                        "h100", "--budget", "2x"], "RecordError", "bad.jsonl line 1: cannot decode video broken.mp4",
             capsys)


def test_data_without_a_model_is_refused(tmp_path, omni, capsys):
    _refused(tmp_path, ["search", "--data", str(omni / "tiny.jsonl"), "--gpu", "h100", "--budget", "2x"],
             "ConfigError", "--data needs --model", capsys)


def _search_argv(ckpt, data, *extra):
    return ["search", "--model", str(ckpt), "--data", str(data), "--gpu", "h100", "--budget", "2x", *extra]


def _held_out(tmp_path, *rows):
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_validation_without_a_model_is_refused(tmp_path, omni, capsys):
    _refused(tmp_path, ["search", "--validation", str(omni / "held.jsonl"), "--gpu", "h100", "--budget", "2x"],
             "ConfigError", "--validation needs --model", capsys)


def test_a_missing_validation_file_is_refused(tmp_path, omni, capsys):
    _refused(tmp_path, _search_argv(omni / "ckpt", omni / "tiny.jsonl", "--validation", str(tmp_path / "no.jsonl")),
             "ConfigError", f"--validation {tmp_path / 'no.jsonl'}: no such file", capsys)


def test_a_malformed_validation_file_names_its_line(tmp_path, omni, capsys):
    bad = tmp_path / "held.jsonl"
    bad.write_text(json.dumps({"video": str(omni / "held-3.mp4"), "question": "q"}) + "\n{not json\n")
    _refused(tmp_path, _search_argv(omni / "ckpt", omni / "tiny.jsonl", "--validation", str(bad)),
             "RecordError", "held.jsonl line 2: not valid JSON", capsys)


def test_a_validation_video_that_cannot_be_decoded_is_refused_before_the_search(tmp_path, omni, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    held = _held_out(tmp_path, {"video": "broken.mp4", "question": "what colour is the square",
                                "choices": ["red", "blue"], "answer": 0})
    _refused(tmp_path, _search_argv(omni / "ckpt", omni / "tiny.jsonl", "--validation", str(held)),
             "RecordError", "held.jsonl line 1: cannot decode video broken.mp4", capsys)


@pytest.mark.parametrize("clash", ["id", "video"])
def test_a_validation_file_that_repeats_search_records_is_refused(tmp_path, omni, capsys, clash):
    (first,) = [r for r in map(json.loads, (omni / "tiny.jsonl").read_text().splitlines())][:1]
    twin = {**first, "video": str(omni / first["video"])}
    if clash == "id":  # another clip under a search record's id
        twin = {**twin, "video": str(omni / "held-3.mp4")}
    else:  # the same clip and question under another id
        twin = {**twin, "id": "renamed"}
    held = _held_out(tmp_path, twin, {"id": "other", "video": str(omni / "held-4.mp4"), "question": "q",
                                      "choices": ["a", "b"], "answer": 1})
    why = "same id 'clip-0'" if clash == "id" else "same video clip-0.mp4 and question"
    _refused(tmp_path, _search_argv(omni / "ckpt", omni / "tiny.jsonl", "--validation", str(held)), "ConfigError",
             f"1 of 2 record(s) repeat search records of --data (first: {held} line 1 and "
             f"{omni / 'tiny.jsonl'} line 1: {why})", capsys)


def test_files_without_ids_do_not_clash_by_their_line_numbers(tmp_path, omni):
    from autoprune.tasks.records import find_overlap

    a = _held_out(tmp_path, {"video": str(omni / "clip-0.mp4"), "question": "what colour is the square"})
    records = load_jsonl(a)
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"video": str(omni / "clip-1.mp4"), "question": "what colour is the square"}) + "\n")
    assert records[0].id == load_jsonl(b)[0].id == "line-1"
    assert find_overlap(records, load_jsonl(b)) == []
    b.write_text(json.dumps({"video": str(omni / "clip-0.mp4"), "question": "What colour  is the square"}) + "\n")
    assert [why for _, _, why in find_overlap(records, load_jsonl(b))] == ["same video clip-0.mp4 and question"]


def test_an_unlabelled_validation_file_is_refused_when_the_search_scores_accuracy(tmp_path, omni, capsys):
    held = _held_out(tmp_path, {"id": "x", "video": str(omni / "held-3.mp4"), "question": "what colour is the square"})
    _refused(tmp_path, _search_argv(omni / "ckpt", omni / "tiny.jsonl", "--validation", str(held)), "ConfigError",
             f"--validation {held} line 1: no answer (or no choices); the search scores accuracy", capsys)


def test_the_validation_evaluator_scores_the_searchs_objective_on_the_held_out_records(lms, tmp_path):
    from autoprune.models.hf import HFOptions, load_setup, validation_evaluator

    H.embedding_records(tmp_path, hidden=32, n=2, labelled=False)
    H.embedding_records(tmp_path, hidden=32, n=4, stem="held", jsonl="held.jsonl", seed=1)  # labelled
    opts = HFOptions(path=str(lms["nemotron_h"] / "ckpt"), data=str(tmp_path / "tiny.jsonl"),
                     validation=str(tmp_path / "held.jsonl"), limit=1)
    setup = load_setup(opts)
    assert setup.evaluator.metric == "fidelity" and len(setup.evaluator.data) == 1
    val = validation_evaluator(setup, opts)
    assert val.metric == "fidelity" and len(val.data) == 4  # the search's objective; every record, limit aside
    assert val.evaluate(Schedule.identity(val.signature.num_layers, model=val.signature)).score == 1.0


def test_a_schedule_made_for_another_checkpoint_is_refused_by_apply_and_by_load(lms, nemotron_h_search, tmp_path,
                                                                                capsys):
    from autoprune.models.hf import load_checkpoint

    paths, _ = nemotron_h_search
    bamba = lms["bamba"]
    _refused(tmp_path, ["apply", "--model", str(bamba / "ckpt"), "--schedule", str(paths[0]), "--data",
                        str(bamba / "tiny.jsonl")], "ModelMismatchError", "bamba", capsys, out=False)
    with pytest.raises(ModelMismatchError, match="bamba"):
        Schedule.load(paths[0], model=autoprune.model_signature(load_checkpoint(str(bamba / "ckpt")).model))


def test_embedding_records_for_another_width_are_refused(lms, tmp_path):
    from autoprune.models.hf import load_setup

    H.embedding_records(tmp_path, hidden=24, n=1)
    with pytest.raises(RecordError, match="width 24, the language model 32"):
        load_setup({"path": str(lms["bamba"] / "ckpt"), "data": str(tmp_path / "tiny.jsonl")})


# ---------------------------------------------------------------- the pieces
def test_a_checkpoint_argument_maps_to_the_hf_source_with_its_path(tmp_path):
    from autoprune.models import resolve_model_argument

    assert resolve_model_argument("demo", None) == ("demo", None, None)
    assert resolve_model_argument("pkg.mod:source", {"a": 1}) == ("pkg.mod:source", {"a": 1}, None)
    (tmp_path / "My-Ckpt").mkdir()
    assert resolve_model_argument(str(tmp_path / "My-Ckpt"), {"dtype": "bf16"}) == (
        "hf", {"dtype": "bf16", "path": str(tmp_path / "My-Ckpt")}, "My-Ckpt")
    assert resolve_model_argument("nvidia/Some-Model", None) == ("hf", {"path": "nvidia/Some-Model"}, "Some-Model")


def test_video_records_parse_and_exactly_one_visual_input_is_required(tmp_path):
    H.write_video(tmp_path / "a.mp4")
    ok = {"video": "a.mp4", "question": "q"}
    (tmp_path / "r.jsonl").write_text(json.dumps(ok) + "\n" + json.dumps({**ok, "embeddings": "e.npy"}) + "\n")
    with pytest.raises(RecordError, match="line 2: give exactly one of 'frames'"):
        load_jsonl(tmp_path / "r.jsonl")
    (tmp_path / "r.jsonl").write_text(json.dumps(ok) + "\n")
    (rec,) = load_jsonl(tmp_path / "r.jsonl")
    from autoprune.tasks.records import load_video

    frames, meta = load_video(rec, num_frames=6)
    assert frames.shape == (6, 64, 64, 3) and meta.total_num_frames == 16 and list(meta.frames_indices)[:2] == [0, 2]
    with pytest.raises(RecordError, match="cannot decode video a.mp4"):
        load_video(rec, num_frames=99)


def test_profile_model_reads_the_language_models_shape_from_the_config(omni, tmp_path):
    from transformers import AutoConfig

    from autoprune.cost.shapes import ModelShape
    from autoprune.models.hf import checkpoint_shape

    shape = checkpoint_shape(str(omni / "ckpt"))
    cfg = AutoConfig.from_pretrained(str(omni / "ckpt"))
    assert shape == ModelShape.from_config(cfg.text_config, name="ckpt")
    out = tmp_path / "table.json"
    assert main(["profile", "--model", str(omni / "ckpt"), "--gpu", "cpu", "--tokens", "32,64", "--kinds", "M",
                 "--no-scoring", "--no-gather", "--no-head", "--rep-ms", "1", "--warmup-ms", "1", "--min-reps", "1",
                 "--output", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["shape"]["name"] == "ckpt"


def test_unlabelled_records_are_scored_by_fidelity_to_the_unreduced_model(lms, tmp_path):
    from autoprune.models.hf import load_setup

    H.embedding_records(tmp_path, hidden=32, n=3, labelled=False)
    setup = load_setup({"path": str(lms["nemotron_h"] / "ckpt"), "data": str(tmp_path / "tiny.jsonl")})
    ev = setup.evaluator
    assert ev.metric == "fidelity"
    assert ev.baseline.score == 1.0 and ev.baseline.extra["kl"] == 0.0
    n = ev.signature.num_layers
    r = ev.evaluate(Schedule(keep=(1.0, 1.0, 1.0) + (0.2,) * (n - 3), model=ev.signature, min_tokens=2))
    assert r.extra["kl"] > 0


def test_an_unsupported_record_kind_for_a_language_model_names_the_record(lms, tmp_path):
    from autoprune.models.hf import load_setup

    H.write_video(tmp_path / "a.mp4")
    (tmp_path / "v.jsonl").write_text(json.dumps({"video": "a.mp4", "question": "q"}) + "\n")
    with pytest.raises(RecordError, match="v.jsonl line 1: bamba checkpoints read \\['embeddings'\\]"):
        load_setup({"path": str(lms["bamba"] / "ckpt"), "data": str(tmp_path / "v.jsonl")})


def test_an_unknown_option_and_a_bad_dtype_are_refused_before_loading(omni):
    from autoprune.models.hf import HFOptions

    with pytest.raises(ConfigError, match="unknown option"):
        HFOptions.from_mapping({"path": "x", "colour": 1})
    with pytest.raises(ConfigError, match="--dtype"):
        HFOptions.from_mapping({"path": "x", "dtype": "int8"})
    with pytest.raises(ConfigError, match="evs_rate"):
        HFOptions.from_mapping({"path": "x", "evs_rate": 1.0})


def test_the_torch_video_path_and_prompt_expansion_equal_transformers_processor_code(omni):
    from types import SimpleNamespace

    from transformers.models.nemotron_h_omni.processing_nemotron_h_omni import NemotronH_Omni_Reasoning_V3Processor

    from autoprune.models.hf_video import load_omni_front_end
    from autoprune.tasks.records import load_video

    fe = load_omni_front_end(omni / "ckpt", load_omni(omni / "ckpt").tokenizer)
    assert fe.video_processor is not None  # transformers' class, from the checkpoint's config
    frames, meta = load_video(load_jsonl(omni / "tiny.jsonl")[0])
    for clip in (frames, frames[:7, :, :50]):  # as stored; odd frame count and a size that must be resized
        theirs = fe.pixel_values(clip)
        assert torch.equal(fe.torch_pixel_values(clip), theirs)
    pvv = fe.pixel_values(frames)
    # the processor's own method, on an object with the attributes it reads
    proc = SimpleNamespace(video_processor=fe.video_processor, video_temporal_patch_dim=2, image_token="<image>",
                           image_start_token="<img>", image_end_token="</img>")
    theirs = NemotronH_Omni_Reasoning_V3Processor.replace_video_token(
        proc, {"num_frames": [len(frames)], "video_metadata": [meta], "pixel_values_videos": pvv}, 0)
    assert fe.expansion(pvv, len(frames), meta) == theirs


def test_the_shipped_hf_spec_without_a_checkpoint_says_what_to_give(tmp_path, capsys):
    _refused(tmp_path, ["search", "--spec", "nemotron-h-8b-h100"], "ConfigError", "needs a checkpoint: --model PATH",
             capsys)
