"""The demo model as a :class:`~autoprune.tasks.QAModel`, and the default evaluation sets.

``default_evaluator()`` is the embedded default the search uses when no task is given:
labelled accuracy of the shipped demo model on 256 test videos of 64 frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..tasks.prepared import PreparedGroup, PreparedSet, group_samples
from ..tasks.records import MCRecord, RecordError, write_jsonl
from . import video as V
from .model import DemoVideoVLM

__all__ = ["DemoQA", "default_evaluator", "export_jsonl", "DEFAULT_EVAL_SAMPLES"]

DEFAULT_EVAL_SAMPLES = 256


class DemoQA:
    """:class:`~autoprune.tasks.QAModel` for :class:`DemoVideoVLM`.

    Records for the demo model use its vocabulary (:data:`autoprune.demo.video.VOCAB`):
    a question ``"<family> [colour|place] <up to 4 object words>"`` (``"count red ring"``,
    ``"needle colour square"``), up to 4 one-word choices (none: an unlabelled prompt,
    compared over the whole vocabulary), frames of 16×16 RGB images or embeddings ``(4·F, hidden)`` of the projector's
    output (the backbone's input vectors for the visual tokens).
    """

    def __init__(self, model: DemoVideoVLM, *, embed_batch_size: int = 128):
        self.model = model
        self.module = model
        self.embed_batch_size = embed_batch_size

    def last_logits(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return self.model.last_logits(inputs_embeds)

    # ------------------------------------------------------------- generated data
    def prepare_videos(self, batch: V.VideoBatch, ids: Sequence[str] | None = None) -> PreparedSet:
        """Embed procedural videos once (rendered on the model's device, in chunks)."""
        parts = []
        with torch.inference_mode():
            for s in range(0, len(batch), self.embed_batch_size):
                parts.append(self.model.embed_batch(batch.select(np.arange(s, min(len(batch), s + self.embed_batch_size)))))
        x = torch.cat(parts)
        n = len(batch)
        split = batch.meta.get("split", "video")
        group = PreparedGroup(
            index=torch.arange(n), inputs_embeds=x,
            visual_mask=DemoVideoVLM.visual_mask(1, batch.frames, x.device)[0].clone(),
            choice_ids=torch.as_tensor(batch.choices, device=x.device),
            choice_mask=torch.as_tensor(batch.choice_mask, device=x.device),
        )
        return PreparedSet(groups=[group], answers=torch.as_tensor(batch.answer, dtype=torch.long),
                           families=tuple(batch.family_names),
                           ids=tuple(ids) if ids is not None else tuple(f"{split}-{int(s)}" for s in batch.seeds),
                           targets=torch.as_tensor(batch.evidence.reshape(n, -1)))

    # ------------------------------------------------------------------ records
    def prepare(self, records: Sequence[MCRecord]) -> PreparedSet:
        embeds, masks, choices, answers, fams, ids = [], [], [], [], [], []
        H = self.model.config.hidden_size
        with torch.inference_mode():
            for r in records:
                q = self._question_ids(r)
                if r.frames is not None:
                    cells = _load_frames(r)
                    frames = cells.shape[0] // V.TOKENS_PER_FRAME
                    vis = self.model.visual_embeds(cells[None].to(self.model.device), frames)[0]
                else:
                    vis = _load_embeddings(r).to(self.model.device)
                    if vis.shape[1] != H:
                        raise RecordError(f"{r.source}: embeddings have width {vis.shape[1]}, the model {H}")
                x = self.model.assemble(vis[None].float(), torch.as_tensor(q, device=self.model.device)[None])[0]
                vm = torch.zeros(x.shape[0], dtype=torch.bool)
                vm[len(V.PREFIX_IDS): len(V.PREFIX_IDS) + vis.shape[0]] = True
                embeds.append(x)
                masks.append(vm)
                choices.append([V.VOCAB.id(c) for c in r.choices])
                answers.append(r.answer)
                fams.append(r.family)
                ids.append(r.id)
        return group_samples(embeds, masks, choices, answers, fams, ids)

    @staticmethod
    def _question_ids(r: MCRecord) -> list[int]:
        if r.prefix:
            raise RecordError(f"{r.source}: the demo model has a fixed prefix; 'prefix' must be empty")
        known = V.VOCAB.ids
        for w in r.question.split() + list(r.choices):
            if w not in known:
                raise RecordError(f"{r.source}: {w!r} is not a word of the demo vocabulary")
        try:
            return V.encode_question(r.question, list(r.choices)).tolist()
        except ConfigError as e:
            raise RecordError(f"{r.source}: {e}") from None


def _load_frames(r: MCRecord) -> torch.Tensor:
    """Image files → cells ``(4·F, 192)`` float32 in [0, 1]."""
    from PIL import Image

    cells = []
    for p in r.frames:
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except OSError as e:
            raise RecordError(f"{r.source}: cannot read frame {p.name}: {e}") from None
        if a.shape[:2] != (V.FRAME_SIZE, V.FRAME_SIZE):
            raise RecordError(f"{r.source}: frame {p.name} is {a.shape[1]}×{a.shape[0]}, the demo model reads "
                              f"{V.FRAME_SIZE}×{V.FRAME_SIZE}")
        c = a.reshape(2, V.CELL_SIZE, 2, V.CELL_SIZE, 3).transpose(0, 2, 1, 3, 4).reshape(4, -1)
        cells.append(c)
    return torch.from_numpy(np.concatenate(cells))


def _load_embeddings(r: MCRecord) -> torch.Tensor:
    p = r.embeddings
    try:
        if p.suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(p))
            key = r.embeddings_key
            if key is None:
                if len(tensors) != 1:
                    raise RecordError(f"{r.source}: {p.name} holds {sorted(tensors)}; name one in 'embeddings_key'")
                key = next(iter(tensors))
            if key not in tensors:
                raise RecordError(f"{r.source}: {p.name} has no tensor {key!r} (has {sorted(tensors)})")
            a = tensors[key]
    except (OSError, ValueError) as e:
        if isinstance(e, RecordError):
            raise
        raise RecordError(f"{r.source}: cannot read embeddings {p.name}: {e}") from None
    if a.ndim == 3:
        a = a.reshape(-1, a.shape[-1])
    if a.ndim != 2 or a.shape[0] == 0 or not np.isfinite(a).all():
        raise RecordError(f"{r.source}: embeddings must be a finite (V, hidden) or (frames, tokens, hidden) array, "
                          f"got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def export_jsonl(batch: V.VideoBatch, directory: str | os.PathLike, *, model: DemoVideoVLM | None = None,
                 name: str = "data.jsonl") -> Path:
    """Write ``batch`` as a JSONL dataset: PNG frames, or with ``model``, ``.npy`` embeddings."""
    from PIL import Image

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    frames = V.render(batch)
    objs = []
    for i in range(len(batch)):
        sid = f"{batch.meta.get('split', 'video')}-{int(batch.seeds[i])}"
        o = {"id": sid, "family": V.FAMILIES[int(batch.family[i])], "question": batch.question_text(i),
             "choices": batch.choice_words(i), "answer": int(batch.answer[i])}
        if model is None:
            (d / sid).mkdir(exist_ok=True)
            paths = []
            for t in range(batch.frames):
                rel = f"{sid}/{t:04d}.png"
                Image.fromarray(np.round(frames[i, t] * 255).astype(np.uint8)).save(d / rel)
                paths.append(rel)
            o["frames"] = paths
        else:
            with torch.inference_mode():
                cells = V.render_cells_torch(batch.select([i]), model.device)
                vis = model.visual_embeds(cells, batch.frames)[0].float().cpu().numpy()
            np.save(d / f"{sid}.npy", vis)
            o["embeddings"] = f"{sid}.npy"
        objs.append(o)
    return write_jsonl(d / name, objs)


def default_evaluator(model: DemoVideoVLM | None = None, *, metric: str = "accuracy", split: str = "test",
                      n: int = DEFAULT_EVAL_SAMPLES, frames: int = V.DEFAULT_FRAMES, start: int = 0,
                      batch_size: int = 64, seed: int = 0, n_boot: int = 1000, forward=None):
    """Evaluator of the demo model (default: the shipped weights) on ``n`` videos of ``split``."""
    from ..tasks.evaluate import AccuracyEvaluator, FidelityEvaluator
    from .model import load

    model = model if model is not None else load()
    qa = DemoQA(model)
    data = qa.prepare_videos(V.make_split(split, n, frames, start))
    cls = {"accuracy": AccuracyEvaluator, "fidelity": FidelityEvaluator}.get(metric)
    if cls is None:
        raise ValueError(f"metric must be 'accuracy' or 'fidelity', got {metric!r}")
    return cls(qa, data, batch_size=batch_size, seed=seed, n_boot=n_boot, forward=forward)
