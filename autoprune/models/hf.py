"""The ``hf`` model source: a real transformers checkpoint, loaded offline, searched on a JSONL
evaluation set.

    autoprune search --model ./Nemotron-3-Nano-Omni --data clips.jsonl --gpu h100 --budget 3x

``--model`` names a checkpoint directory, or a repo id already in the local Hugging Face cache
(:func:`autoprune.models.resolve_model_argument` maps either to this source with option
``path``). Nothing is ever downloaded: every ``from_pretrained`` runs with
``local_files_only=True`` and a checkpoint that lacks a file is refused with the names of the
missing files (:func:`resolve_checkpoint`).

Families (:data:`FAMILIES`, keyed by ``config.model_type``):

- ``nemotron_h_omni`` — ``NemotronH_Omni_Reasoning_V3`` (RADIO vision tower, NemotronH language
  model, built-in EVS at ``video_pruning_rate``): records with ``video`` or ``frames`` go through
  the checkpoint's video front end (:mod:`autoprune.models.hf_video`) and the model's own vision
  tower, projector and EVS; what the language model receives *after EVS* is what the schedules
  reduce. ``embeddings`` records skip the vision tower (and EVS).
- ``nemotron_h``, ``bamba``, ``qwen3_5_text`` (Qwen3.5's language model), ``qwen3_next``, ``lfm2``
  (LFM2-VL's language model) — language models: records with ``embeddings`` (visual embeddings of
  the model's width) are spliced into the embedded prompt at the video's place.

The prompt is ``[prefix] <video> question [A. choice …]``, rendered with the tokenizer's chat
template where it has one (generation prompt added). Accuracy when every record has an answer
(the predicted choice is the letter token with the highest logit), fidelity to the unreduced
model otherwise (or with ``--task fidelity``): top-1 agreement of the first generated token and
KL of the answer distribution (:mod:`autoprune.tasks.evaluate`).

Latency: the language model's prefill of the evaluated token layout (the largest group of
samples: prefix, visual tokens after EVS, query), predicted from the checkpoint's
:class:`~autoprune.cost.shapes.ModelShape` for the target GPU (table or roofline), or measured
on the present device with ``--measure`` (the real model, one sample). The vision encoder and
EVS do not change with the schedule; a measuring study times them once on the present device
(first video record) and reports them beside the prefill in the study's latency info as
``vision_ms`` (time to first token = ``vision_ms`` + prefill); ``evs_rate`` changes how many
tokens enter layer 0.

Validation: ``--validation HELD_OUT.jsonl`` (option ``validation``) is a disjoint set of records,
scored by the same objective as the search (accuracy when the search scores accuracy — then every
held-out record needs an answer — else fidelity). After the trials, the export validates the
candidates on it (:mod:`autoprune.search.validate`: the search front, near-ties, references,
Optuna's front) and takes the front on validation scores. A held-out file that repeats a search
record (the same id, or the same video and question; :func:`autoprune.tasks.records.find_overlap`)
is refused before anything loads. Both files are named in the study's provenance with their
record count and SHA-256 (``evaluation_info``). ``limit`` applies to the search records only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnsupportedModelError
from ..interfaces import SourceRequest, StudyInputs
from . import register_model_source

__all__ = ["HFSource", "study_inputs", "HFOptions", "HFModel", "HFQA", "HFSetup", "FAMILIES", "HF_OPTIONS", "resolve_checkpoint",
           "load_checkpoint", "load_setup", "validation_evaluator", "check_validation_records", "evaluation_info",
           "checkpoint_shape", "render_prompt", "embed_after_evs", "DTYPES"]

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

HF_OPTIONS = {
    "path": "checkpoint directory, or a repo id in the local Hugging Face cache (required)",
    "data": "JSONL evaluation records (required; format in autoprune.tasks.records)",
    "validation": "JSONL records held out from data: the export validates the front on them (same objective; "
                  "every record, limit aside)",
    "dtype": "bf16, fp16 or fp32 (default: bf16 on a GPU, fp32 on the CPU)",
    "device": "torch device of the model (default: cuda when there is one, else cpu)",
    "limit": "evaluate the first N records only",
    "evs_rate": "EVS video_pruning_rate of nemotron_h_omni in [0, 1) (default: the checkpoint's)",
    "num_frames": "frames sampled uniformly from each video (default: the processor's, else every frame)",
    "fps": "frames sampled per second of video instead of num_frames",
    "batch_size": "samples per forward where lengths and visual counts agree (8)",
    "seed": "bootstrap seed (0)", "n_boot": "bootstrap resamples (1000)",
    "prefix_cache_mb": "MiB of the prefix activation cache (default: half the free GPU memory, 1024 on the CPU; "
                       "0 turns it off)",
    "chat_template": "render prompts with the tokenizer's chat template (true where it has one)",
    "latency_widths": "a preset shape (e.g. nemotron-h-8b) whose widths the latency uses with the checkpoint's "
                      "layer pattern (default: the checkpoint's own widths; for tiny test checkpoints)",
    "latency_visual": "visual tokens of the latency layout (default: the evaluated samples')",
    "progress": "a progress bar per evaluation on long work (true)",
    "stack": "what --measure times: eager (the runtime) or compiled (the serving runner, ReducedPrefill)",
}


# ------------------------------------------------------------------ options
@dataclass(frozen=True)
class HFOptions:
    """The ``hf`` source's options, validated (see :data:`HF_OPTIONS`)."""

    path: str
    data: str | None = None
    validation: str | None = None
    dtype: str | None = None
    device: str | None = None
    limit: int | None = None
    evs_rate: float | None = None
    num_frames: int | None = None
    fps: float | None = None
    batch_size: int = 8
    seed: int = 0
    n_boot: int = 1000
    prefix_cache_mb: float | None = None
    chat_template: bool = True
    latency_widths: str | None = None
    latency_visual: int | None = None
    progress: bool = True
    stack: str = "eager"

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError("the hf model needs a checkpoint: --model PATH (or --model-option path=PATH)")
        for name in ("data", "validation"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, str) or Path(v).suffix != ".jsonl":
                raise ConfigError(f"--{name} must be a .jsonl file, got {v!r}")
            if not Path(v).is_file():
                raise ConfigError(f"--{name} {v}: no such file")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        for name, lo in (("limit", 1), ("num_frames", 1), ("batch_size", 1), ("n_boot", 1), ("seed", 0),
                         ("latency_visual", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("fps", "prefix_cache_mb", "evs_rate"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v < 0):
                raise ConfigError(f"{name} must be a number >= 0, got {v!r}")
        if self.evs_rate is not None and not self.evs_rate < 1:
            raise ConfigError(f"evs_rate must be in [0, 1), got {self.evs_rate!r}")
        if self.fps is not None and self.num_frames is not None:
            raise ConfigError("give num_frames or fps, not both")
        for name in ("chat_template", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.stack not in ("eager", "compiled"):
            raise ConfigError(f"--stack must be eager or compiled, got {self.stack!r}")
        if self.latency_widths is not None:
            from ..cost.shapes import get_shape

            get_shape(self.latency_widths)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> HFOptions:
        unknown = sorted(set(options) - set(HF_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for model 'hf'; known: {sorted(HF_OPTIONS)}")
        kw = dict(options)
        if "path" not in kw:
            raise ConfigError("the hf model needs a checkpoint: --model PATH (or --model-option path=PATH)")
        for k in ("path", "data", "validation", "device", "latency_widths"):
            if kw.get(k) is not None and not isinstance(kw[k], str):
                kw[k] = str(kw[k])
        return cls(**kw)


# --------------------------------------------------------------- checkpoints
def _hf_env() -> None:
    # Offline always: transformers and huggingface_hub read these when imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _weight_files(folder: Path) -> tuple[list[str], list[str]]:
    """(weight files present, weight files named by an index but missing)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = folder / index
        if p.is_file():
            try:
                shards = sorted(set(json.loads(p.read_text(encoding="utf-8"))["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ConfigError(f"{p}: not a weight index ({e})") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            return [s for s in shards if s not in missing], missing
    present = [n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    return present, ([] if present else ["model.safetensors"])


def resolve_checkpoint(path: str) -> Path:
    """The local folder of checkpoint ``path``: a directory, or a repo id in the local Hugging Face
    cache. ConfigError names what is missing (never downloads)."""
    _hf_env()
    p = Path(path).expanduser()
    if p.is_dir():
        folder = p
    elif p.exists():
        raise ConfigError(f"--model {path}: not a checkpoint (a file; give the checkpoint's directory)")
    elif path.count("/") == 1 and not path.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(repo_id=path, local_files_only=True))
        except Exception as e:  # noqa: BLE001 — LocalEntryNotFoundError and friends
            raise ConfigError(
                f"--model {path}: not a directory, and the repo is not in the local Hugging Face cache "
                f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}; "
                f"{type(e).__name__}). autoprune never downloads: fetch it where there is a network "
                f"(`huggingface-cli download {path}`) or give its directory") from None
    else:
        raise ConfigError(f"--model {path}: no such directory (and not an org/name repo id)")
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    _, absent = _weight_files(folder)
    missing += absent
    if missing:
        what = "not a checkpoint" if "config.json" in missing else "an incomplete checkpoint"
        raise ConfigError(f"--model {path}: {what}: missing {missing} in {folder}")
    return folder


def read_config(folder: Path):
    """The checkpoint's transformers config (no weights); UnsupportedModelError for another family."""
    _hf_env()
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{folder / 'config.json'}: not valid JSON: {e}") from None
    mt = raw.get("model_type") if isinstance(raw, dict) else None
    if mt not in FAMILIES:
        raise UnsupportedModelError(f"{folder}: model_type {mt!r} is not supported by the hf source; supported: "
                                    f"{sorted(FAMILIES)}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 — transformers' validation errors
        raise ConfigError(f"{folder / 'config.json'}: transformers cannot read it: {e}") from None


@dataclass(frozen=True)
class HFFamily:
    """How one ``model_type`` is loaded: its auto class, where its language model is, and which
    visual record kinds it reads."""

    model_type: str
    auto_class: str
    visual: tuple[str, ...]
    omni: bool = False

    def language_model(self, model):
        return model.language_model if self.omni else model

    def text_config(self, config):
        return config.text_config if self.omni else config


FAMILIES: dict[str, HFFamily] = {
    "nemotron_h_omni": HFFamily("nemotron_h_omni", "AutoModelForImageTextToText", ("video", "frames", "embeddings"),
                                omni=True),
    "nemotron_h": HFFamily("nemotron_h", "AutoModelForCausalLM", ("embeddings",)),
    "bamba": HFFamily("bamba", "AutoModelForCausalLM", ("embeddings",)),
    "granitemoehybrid": HFFamily("granitemoehybrid", "AutoModelForCausalLM", ("embeddings",)),
    "falcon_h1": HFFamily("falcon_h1", "AutoModelForCausalLM", ("embeddings",)),
    "zamba2": HFFamily("zamba2", "AutoModelForCausalLM", ("embeddings",)),
    "jamba": HFFamily("jamba", "AutoModelForCausalLM", ("embeddings",)),
    # linear-attention / short-conv hybrids: Qwen3.5's language model, Qwen3-Next, LFM2
    "qwen3_5_text": HFFamily("qwen3_5_text", "AutoModelForCausalLM", ("embeddings",)),
    "qwen3_next": HFFamily("qwen3_next", "AutoModelForCausalLM", ("embeddings",)),
    "lfm2": HFFamily("lfm2", "AutoModelForCausalLM", ("embeddings",)),
}


def checkpoint_shape(path: str, *, dtype: str = "bfloat16", name: str | None = None):
    """The :class:`~autoprune.cost.shapes.ModelShape` of checkpoint ``path``'s language model, from
    its config alone (``autoprune profile --model PATH``). Named after the checkpoint's folder."""
    from ..cost.shapes import ModelShape

    folder = resolve_checkpoint(path)
    config = read_config(folder)
    fam = FAMILIES[config.model_type]
    return ModelShape.from_config(fam.text_config(config), name=name or _shape_name(folder), dtype=dtype)


def _shape_name(folder: Path) -> str:
    name = folder.name
    if len(folder.parts) >= 3 and folder.parent.name == "snapshots":  # hub cache: models--org--name/snapshots/sha
        name = folder.parent.parent.name.removeprefix("models--").replace("--", "-")
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name) or "checkpoint"


@dataclass
class HFModel:
    """A loaded checkpoint: the model, its language model (what ``reduce`` hooks), tokenizer,
    video front end (omni), family and folder."""

    model: Any
    family: HFFamily
    tokenizer: Any
    folder: Path | None = None
    front_end: Any = None
    name: str = "checkpoint"

    @property
    def lm(self):
        return self.family.language_model(self.model)

    @property
    def config(self):
        return self.model.config

    @property
    def text_config(self):
        return self.family.text_config(self.model.config)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.lm.parameters()).dtype

    @property
    def evs_rate(self) -> float:
        return float(getattr(self.model, "video_pruning_rate", 0.0) or 0.0) if self.family.omni else 0.0

    def set_evs_rate(self, rate: float) -> None:
        """Set the omni model's EVS ``video_pruning_rate`` (the attribute its forward reads)."""
        if not self.family.omni:
            raise ConfigError(f"evs_rate is an option of nemotron_h_omni checkpoints, not {self.family.model_type}")
        self.model.video_pruning_rate = float(rate)
        self.model.config.video_pruning_rate = float(rate)


def _torch_dtype(dtype: str | None, device: str):
    import torch

    name = DTYPES[dtype] if dtype else ("bfloat16" if device.startswith("cuda") else "float32")
    return getattr(torch, name)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_checkpoint(path: str, *, dtype: str | None = None, device: str | None = None,
                    evs_rate: float | None = None) -> HFModel:
    """Load checkpoint ``path`` offline with SDPA attention (see the module docstring)."""
    folder = resolve_checkpoint(path)
    config = read_config(folder)
    fam = FAMILIES[config.model_type]
    device = device or _default_device()
    torch_dtype = _torch_dtype(dtype, device)
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"--model {path}: no usable tokenizer in {folder} ({type(e).__name__}: {e})") from None
    cls = getattr(transformers, fam.auto_class)
    from .._deps import available

    # straight onto the GPU where accelerate can place it; else load, then move
    placed = device != "cpu" and available("accelerate")
    try:
        model = cls.from_pretrained(str(folder), dtype=torch_dtype, attn_implementation="sdpa",
                                    local_files_only=True, **({"device_map": device} if placed else {}))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ConfigError(f"--model {path}: transformers cannot load the weights in {folder}: {e}") from None
    if not placed:
        model = model.to(device)
    model.eval()
    front_end = None
    if fam.omni:
        from .hf_video import load_omni_front_end

        front_end = load_omni_front_end(folder, tokenizer)
    hf = HFModel(model=model, family=fam, tokenizer=tokenizer, folder=folder, front_end=front_end,
                 name=_shape_name(folder))
    if evs_rate is not None:
        hf.set_evs_rate(evs_rate)
    return hf


# ------------------------------------------------------------------ prompts
def render_prompt(tokenizer, record, placeholder: str, *, chat_template: bool = True) -> str:
    """The prompt text of ``record`` with ``placeholder`` where the video goes (see the module docstring)."""
    body = (record.prefix + "\n" if record.prefix else "") + placeholder + "\n" + record.question
    if record.choices:
        body += "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(record.choices))
        body += "\nAnswer with the option's letter."
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                             add_generation_prompt=True)
    return body + "\n"


def _choice_ids(tokenizer, record) -> list[int]:
    from ..tasks.records import RecordError

    if len(record.choices) > len(LETTERS):
        raise RecordError(f"{record.source}: at most {len(LETTERS)} choices, got {len(record.choices)}")
    ids = []
    for i in range(len(record.choices)):
        toks = tokenizer.encode(LETTERS[i], add_special_tokens=False)
        if not toks:
            raise RecordError(f"{record.source}: the tokenizer has no token for the letter {LETTERS[i]!r}")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise RecordError(f"{record.source}: the tokenizer gives the choice letters the same token ids {ids}")
    return ids


class _Captured(Exception):
    """Raised by the capture hook once the language model's input is recorded (stops the forward)."""


def embed_after_evs(model, input_ids, pixel_values_videos):
    """``(inputs_embeds (b, L', H), visual_mask (b, L'))``: what the omni model's language model
    receives for these inputs — the model's own embedding, vision tower, projector and EVS — and
    which of those tokens are video tokens. The language model itself does not run."""
    import torch

    from ..adapters import get_input_stage

    stage = get_input_stage(model)
    got: dict = {}

    def capture(module, args, kwargs):
        got["x"] = kwargs["inputs_embeds"].detach()
        got["kept"] = stage.take()
        raise _Captured

    hooks = stage.install() + [model.language_model.register_forward_pre_hook(capture, with_kwargs=True)]
    try:
        with torch.inference_mode():
            model(input_ids=input_ids, pixel_values_videos=pixel_values_videos, use_cache=False)
    except _Captured:
        pass
    finally:
        for h in hooks:
            h.remove()
    vm = input_ids == model.config.image_token_id
    kept = got.get("kept")
    if kept is not None:
        vm = vm[kept].view(vm.shape[0], -1)
    if "x" not in got or vm.shape[1] != got["x"].shape[1]:
        raise UnsupportedModelError(f"{type(model).__name__}: could not follow the tokens through EVS "
                                    f"({tuple(vm.shape)} mask for {tuple(got['x'].shape) if 'x' in got else 'no'} input)")
    return got["x"], vm


class HFQA:
    """A :class:`~autoprune.tasks.prepared.QAModel` over a loaded checkpoint: ``module`` is its
    language model (what the schedules reduce); ``prepare`` embeds records once."""

    def __init__(self, hf: HFModel, *, num_frames: int | None = None, fps: float | None = None,
                 chat_template: bool = True, progress: bool = False):
        self.hf = hf
        self.module = hf.lm
        self.num_frames, self.fps = num_frames, fps
        self.chat_template = chat_template
        self.progress = progress
        self.video_tokens_before_evs: list[int] = []
        self.vision_seconds = 0.0  # vision tower + projector + EVS, summed over the prepared records
        self.first_video_inputs: tuple | None = None  # (input_ids, pixel_values_videos) of the first video

    def _frames_options(self) -> dict:
        if self.num_frames is not None or self.fps is not None:
            return {"num_frames": self.num_frames, "fps": self.fps}
        proc = getattr(self.hf.front_end, "processor", None)
        vp = getattr(proc, "video_processor", None)
        return {"num_frames": getattr(vp, "num_frames", None), "fps": getattr(vp, "fps", None)}

    def _embed_text(self, text: str, *, first: bool):
        import torch

        ids = self.hf.tokenizer(text, add_special_tokens=first)["input_ids"]
        t = torch.as_tensor(ids, dtype=torch.long, device=self.hf.device)
        return self.module.get_input_embeddings()(t)

    def _embedding_sample(self, record):
        import torch

        from ..tasks.records import RecordError, load_embeddings

        marker = "<video>"
        text = render_prompt(self.hf.tokenizer, record, marker, chat_template=self.chat_template)
        before, _, after = text.partition(marker)
        vis = load_embeddings(record)
        H = self.hf.text_config.hidden_size
        if vis.shape[1] != H:
            raise RecordError(f"{record.source}: embeddings have width {vis.shape[1]}, the language model {H}")
        with torch.inference_mode():
            a, c = self._embed_text(before, first=True), self._embed_text(after, first=False)
            x = torch.cat([a, vis.to(a.device, a.dtype), c])
        vm = torch.zeros(x.shape[0], dtype=torch.bool)
        vm[a.shape[0]: a.shape[0] + vis.shape[0]] = True
        return x, vm

    def _video_sample(self, record):
        from ..tasks.records import load_video
        from .hf_video import VIDEO_TOKEN

        frames, meta = load_video(record, **self._frames_options())
        text = render_prompt(self.hf.tokenizer, record, VIDEO_TOKEN, chat_template=self.chat_template)
        inputs = self.hf.front_end(text, frames, meta)
        dev = self.hf.device
        ids = inputs["input_ids"].to(dev)
        pvv = inputs["pixel_values_videos"].to(dev, self.hf.dtype)
        self.video_tokens_before_evs.append(int((ids == self.hf.config.image_token_id).sum()))
        if self.first_video_inputs is None:
            self.first_video_inputs = (ids, pvv)
        t0 = time.perf_counter()
        x, vm = embed_after_evs(self.hf.model, ids, pvv)
        self.vision_seconds += time.perf_counter() - t0
        return x[0], vm[0].cpu()

    def prepare(self, records: Sequence):
        from ..tasks.prepared import group_samples
        from ..tasks.records import RecordError

        embeds, masks, choices, answers, fams, ids = [], [], [], [], [], []
        allowed = self.hf.family.visual
        bar = _progress(len(records), "embedding records", self.progress and len(records) > 4)
        try:
            for r in records:
                kind = "video" if r.video is not None else ("frames" if r.frames is not None else "embeddings")
                if kind not in allowed:
                    raise RecordError(f"{r.source}: {self.hf.family.model_type} checkpoints read {list(allowed)} "
                                      f"records, not {kind!r}")
                x, vm = self._embedding_sample(r) if kind == "embeddings" else self._video_sample(r)
                embeds.append(x)
                masks.append(vm)
                choices.append(_choice_ids(self.hf.tokenizer, r) if r.choices else [])
                answers.append(r.answer)
                fams.append(r.family)
                ids.append(r.id)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return group_samples(embeds, masks, choices, answers, fams, ids, same_positions=False)

    def last_logits(self, inputs_embeds):
        out = self.module(inputs_embeds=inputs_embeds, use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float()


def _progress(total: int, desc: str, show: bool):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, disable=None)


# ----------------------------------------------------------------- the setup
@dataclass
class HFSetup:
    """A checkpoint loaded with one evaluation set: the evaluator, the model, the latency shape
    and layout, one sample for measuring, and what the vision side costs."""

    evaluator: Any
    hf: HFModel
    qa: HFQA
    shape: Any
    layout: Any
    sample_embeds: Any
    sample_mask: Any
    info: dict = field(default_factory=dict)


def _layout(data):
    from ..cost.shapes import TokenLayout

    g = max(data.groups, key=len)
    vm = g.visual_mask[0] if g.visual_mask.dim() == 2 else g.visual_mask
    pos = vm.nonzero().flatten()
    L, V = vm.shape[0], int(vm.sum())
    query = L - 1 - int(pos.max())
    return TokenLayout(prefix=L - V - query, visual=V, query=query), g


def _cache_bytes(options: HFOptions, device) -> int:
    import torch

    if options.prefix_cache_mb is not None:
        return int(options.prefix_cache_mb * 2**20)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    from ..tasks.prefix_cache import DEFAULT_MAX_BYTES

    return DEFAULT_MAX_BYTES


def load_setup(options: HFOptions | Mapping[str, Any], task: str | None = None, *, hf: HFModel | None = None,
               records: Sequence | None = None, qa: HFQA | None = None) -> HFSetup:
    """Load the checkpoint (or take ``hf``) and the evaluation records (or ``records``), embed them
    once (with ``qa``, default an :class:`HFQA` of the options), and build the evaluator
    (``task``: None = accuracy when labelled, else fidelity)."""

    from ..cost.shapes import ModelShape, get_shape
    from ..tasks.records import load_jsonl

    opts = options if isinstance(options, HFOptions) else HFOptions.from_mapping(options)
    _check_task(task)
    if records is None:
        if opts.data is None:
            raise ConfigError("the hf model needs evaluation records: --data FILE.jsonl")
        records = load_jsonl(opts.data)
    records = list(records)[: opts.limit] if opts.limit else list(records)
    if hf is None:
        hf = load_checkpoint(opts.path, dtype=opts.dtype, device=opts.device, evs_rate=opts.evs_rate)
    elif opts.evs_rate is not None:
        hf.set_evs_rate(opts.evs_rate)
    if qa is None:
        qa = _qa(hf, opts)
    evaluator = _evaluator(opts, task, qa, records, where=f"--data {opts.data}")
    data = evaluator.data
    layout, g = _layout(data)
    if opts.latency_visual is not None:
        layout = dataclasses.replace(layout, visual=opts.latency_visual)
    dtype = str(hf.dtype).removeprefix("torch.")
    # the latency is of the served model: half precision (the evaluation may run in fp32 on a CPU)
    lat_dtype = dtype if dtype in ("bfloat16", "float16") else "bfloat16"
    shape = ModelShape.from_config(hf.text_config, name=hf.name, dtype=lat_dtype)
    if opts.latency_widths is not None:
        shape = dataclasses.replace(get_shape(opts.latency_widths), layer_kinds=shape.layer_kinds,
                                    name=f"{hf.name}@{opts.latency_widths}", dtype=lat_dtype)
    x = g.inputs_embeds[:1]
    vm = (g.visual_mask[:1] if g.visual_mask.dim() == 2 else g.visual_mask[None]).to(x.device)
    info = {"checkpoint": str(hf.folder) if hf.folder else hf.name, "family": hf.family.model_type,
            "dtype": dtype, "device": str(hf.device), "records": len(records),
            "layout": {"prefix": layout.prefix, "visual": layout.visual, "query": layout.query}}
    if hf.family.omni:
        info["evs_rate"] = hf.evs_rate
        info["video_front_end"] = getattr(hf.front_end, "source", None)
        if qa.video_tokens_before_evs:
            info["video_tokens_before_evs"] = max(qa.video_tokens_before_evs)
            # wall clock of the first (cold) pass while preparing; `measure` times it properly
            info["vision_prepare_ms_per_record"] = 1e3 * qa.vision_seconds / len(qa.video_tokens_before_evs)
    return HFSetup(evaluator=evaluator, hf=hf, qa=qa, shape=shape, layout=layout, sample_embeds=x,
                   sample_mask=vm, info=info)


def _qa(hf: HFModel, opts: HFOptions) -> HFQA:
    return HFQA(hf, num_frames=opts.num_frames, fps=opts.fps, chat_template=opts.chat_template, progress=opts.progress)


def _evaluator(opts: HFOptions, task: str | None, qa: HFQA, records: Sequence, *, where: str):
    """The evaluator of ``records`` embedded by ``qa``: accuracy for ``task`` accuracy, or for
    None when every record is labelled; fidelity otherwise."""
    from ..tasks.evaluate import AccuracyEvaluator, FidelityEvaluator
    from ..tasks.prefix_cache import PrefixCache

    data = qa.prepare(records)
    labelled = data.labelled and all(g.has_choices for g in data.groups)
    if task == "accuracy" and not labelled:
        raise ConfigError(f"{where}: scoring accuracy needs an answer and choices in every record")
    cls = AccuracyEvaluator if (task == "accuracy" or (task is None and labelled)) else FidelityEvaluator
    cache = _cache_bytes(opts, qa.hf.device)
    kw = {"batch_size": opts.batch_size, "seed": opts.seed, "n_boot": opts.n_boot, "progress": opts.progress}
    if cache > 0:
        kw["prefix_cache"] = PrefixCache(qa.module, max_bytes=cache)
    return cls(qa, data, **kw)


def validation_evaluator(setup: HFSetup, options: HFOptions, records: Sequence | None = None):
    """The evaluator of the held-out records (``records``, default those of ``options.validation``)
    with the same objective as ``setup``'s and its model; every record (``limit`` is the search's).
    The search's prefix cache is emptied first: the search is over, and its memory is this one's."""
    from ..tasks.records import load_jsonl

    if records is None:
        if options.validation is None:
            raise ConfigError("no validation records: --validation FILE.jsonl")
        records = load_jsonl(options.validation)
    cache = getattr(setup.evaluator, "prefix_cache", None)
    if cache is not None:
        cache.clear()
    return _evaluator(options, setup.evaluator.metric, _qa(setup.hf, options), list(records),
                      where=f"--validation {options.validation}")


def _labelled(records: Sequence) -> bool:
    return all(r.answer is not None and r.choices for r in records)


def check_validation_records(options: HFOptions, task: str | None, *, probe: bool = True) -> tuple[list, list]:
    """``(search records, held-out records)`` of ``options.data`` and ``options.validation``, read
    and checked before anything loads: the held-out file repeats no search record, has answers
    wherever the search scores accuracy, and (``probe``) its videos decode. ConfigError or
    RecordError, one line, otherwise."""
    from ..tasks.records import find_overlap, load_jsonl, probe_video

    search, held_out = load_jsonl(options.data), load_jsonl(options.validation)
    clashes = find_overlap(search, held_out)
    if clashes:
        h, twin, why = clashes[0]
        raise ConfigError(f"--validation {options.validation}: {len(clashes)} of {len(held_out)} record(s) repeat "
                          f"search records of --data (first: {h.source} and {twin.source}: {why}); a validation "
                          "set must be held out from the search data")
    accuracy = task == "accuracy" or (task is None and _labelled(search))
    if accuracy:
        missing = next((r for r in held_out if not (r.answer is not None and r.choices)), None)
        if missing is not None:
            raise ConfigError(f"--validation {missing.source}: no answer (or no choices); the search scores accuracy "
                              "(every --data record is labelled), so every validation record needs one")
    if probe:
        for r in held_out:
            probe_video(r)
    return search, held_out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def evaluation_info(options: HFOptions, n_search: int, n_validation: int | None = None) -> dict:
    """What a study evaluates, for provenance: each JSONL file (absolute path, SHA-256 of its bytes
    — the records, not the videos they name), the records evaluated, and how the sets are kept apart."""
    def part(path: str, n: int) -> dict:
        return {"data": str(Path(path).resolve()), "n": n, "sha256": _sha256(path)}

    search = part(options.data, n_search) if options.data else {"n": n_search}
    if options.limit:
        search["limit"] = options.limit
    validation = None
    if options.validation is not None and n_validation is not None:
        validation = {**part(options.validation, n_validation),
                      "disjoint": "no shared record id, nor the same visual input with the same question"}
    return {"search": search, "validation": validation}


def _check_task(task: str | None) -> None:
    if task not in (None, "accuracy", "fidelity"):
        raise ConfigError(f"the hf model's tasks are 'accuracy' and 'fidelity' (records come from --data), "
                          f"not {task!r}")


def measured_vision_ms(hf: HFModel, input_ids, pixel_values_videos, *, clock=None) -> float:
    """Median ms of the vision side of one prefill on the present device: vision tower, projector,
    embedding and EVS (:func:`embed_after_evs`), timed like a prefill."""
    from ..profiler.timing import time_fn

    stats = time_fn(lambda: embed_after_evs(hf.model, input_ids, pixel_values_videos), clock=clock,
                    device=input_ids.device)
    return float(stats.median)


# ----------------------------------------------------------------- the source
@register_model_source("hf")
class HFSource:
    """A transformers checkpoint (see the module docstring); options in :data:`HF_OPTIONS`."""

    name = "hf"
    options = HF_OPTIONS

    def check(self, request: SourceRequest) -> None:
        self._checked(request)

    def _checked(self, request: SourceRequest) -> tuple[HFOptions, list | None]:
        """The request's options and held-out records (None without ``validation``), checked."""
        _check_task(request.task)
        opts = HFOptions.from_mapping(request.options)
        if opts.data is None:
            raise ConfigError("the hf model needs evaluation records: --data FILE.jsonl")
        folder = resolve_checkpoint(opts.path)
        config = read_config(folder)
        if opts.evs_rate is not None and config.model_type != "nemotron_h_omni":
            raise ConfigError(f"evs_rate is an option of nemotron_h_omni checkpoints, not {config.model_type}")
        if opts.validation is None:
            return opts, None
        return opts, check_validation_records(opts, request.task)[1]

    def build(self, request: SourceRequest) -> StudyInputs:
        opts, held_out = self._checked(request)
        if request.measure and opts.device is None and not request.gpu.is_cpu:
            import torch

            if torch.cuda.is_available():
                opts = dataclasses.replace(opts, device="cuda")
        setup = load_setup(opts, request.task)
        validation = None
        if held_out is not None:
            def validation(setup=setup, opts=opts, records=held_out):
                return validation_evaluator(setup, opts, records)
        info = evaluation_info(opts, len(setup.evaluator.data), None if held_out is None else len(held_out))
        return study_inputs(setup, request, stack=opts.stack, validation=validation, evaluation_info=info)


def study_inputs(setup: HFSetup, request: SourceRequest, *, model: str = "hf", monitor=None,
                 timer_kw: Mapping[str, Any] | None = None, stack: str = "eager", validation=None,
                 evaluation_info: Mapping[str, Any] | None = None) -> StudyInputs:
    """The :class:`StudyInputs` of a loaded setup: its evaluator, and the language model's prefill
    latency predicted for ``request.gpu`` or (``request.measure``) measured on the present device
    (``monitor``: an NVML monitor for energy; ``timer_kw``: options of the timer; ``stack``: what
    is timed, see :class:`~autoprune.profiler.measured.MeasuredLatency``); ``validation`` and
    ``evaluation_info`` as in :class:`~autoprune.interfaces.StudyInputs`."""
    from ..cost.latency import LatencyModel
    from ..profiler.measured import MeasuredLatency

    ev, lay = setup.evaluator, setup.layout
    info = dict(setup.info)
    info["shape"] = setup.shape.name
    if request.measure:
        try:
            predicted = LatencyModel(setup.shape, lay, request.gpu)
        except ConfigError:  # no table or calibration for this device (the CPU)
            predicted = None
        latency = MeasuredLatency(setup.qa.module, setup.sample_embeds, setup.sample_mask, gpu=request.gpu.id,
                                  monitor=monitor, timer_kw=timer_kw, stack=stack)
        predictor = predicted or latency.with_timer(repeats=1)  # projections timed once; the objective repeats
        info["measured"] = "the language model's prefill of one evaluated sample"
        if setup.qa.first_video_inputs is not None:
            info["vision_ms"] = measured_vision_ms(setup.hf, *setup.qa.first_video_inputs)
    else:
        latency = predictor = LatencyModel(setup.shape, lay, request.gpu)
        info.update(latency.describe())
    info["latency"] = "language-model prefill (vision encoder and EVS excluded; the vision side is in vision_*_ms)"
    return StudyInputs(evaluator=ev, latency=latency, predictor=predictor, model=model,
                       task=request.task or ev.metric, shape=setup.shape, layout=lay, latency_info=info,
                       validation=validation,
                       evaluation_info=evaluation_info or {})
