"""Multiple-choice video QA records and their JSONL file format.

One JSON object per line (blank lines and lines starting with ``#`` are skipped)::

    {"id": "clip-0007",                    optional; default "line-<n>"
     "family": "count",                    optional; groups per-family scores; default "all"
     "prefix": "",                         optional text before the video (generic models)
     "frames": ["clip-0007/000.png", ...], image files, relative to the JSONL's folder
     "video": "clip-0007.mp4",             or: a video file, decoded by transformers' own video
                                           loader (``transformers.video_utils.load_video``, PyAV
                                           backend: ``pip install 'autoprune[video]'``)
     "embeddings": "clip-0007.npy",        or: precomputed visual embeddings, .npy or .safetensors,
                                           shape (V, hidden) or (frames, tokens, hidden)
     "embeddings_key": "visual",           optional: tensor name inside a .safetensors file
     "question": "count red ring",
     "choices": ["1", "2", "3", "4"],     optional only for unlabelled prompts (fidelity over
                                           the whole next-token distribution)
     "answer": 2}                          index into choices, or the choice text; optional
                                           (records without answers serve fidelity only)

Exactly one of ``frames``, ``video`` and ``embeddings`` is given. A bad record raises
:class:`RecordError` naming the file and line number and what is wrong with it.

Frame sampling of a ``video`` (:func:`load_video`): ``num_frames`` frames spread uniformly over
the clip, or ``fps`` frames per second of it, or every frame when neither is given (transformers'
``default_sample_indices_fn``; a model source passes its options, e.g. ``--model-option
num_frames=32`` of the ``hf`` source). A file that cannot be decoded, or that has fewer frames than
asked for, is a :class:`RecordError` naming the record.

A held-out set must not repeat the records it is held out from: :func:`find_overlap` finds the
records of one file that share an id (where both give one) or a visual input and question with
another's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AutopruneError

__all__ = ["MCRecord", "RecordError", "load_jsonl", "parse_record", "write_jsonl", "load_embeddings", "load_video",
           "probe_video", "find_overlap", "VISUAL_KEYS"]

VISUAL_KEYS = ("frames", "video", "embeddings")
_KEYS = {"id", "family", "prefix", *VISUAL_KEYS, "embeddings_key", "question", "choices", "answer"}


class RecordError(AutopruneError, ValueError):
    """A JSONL record is malformed (the message names the file and line)."""


@dataclass(frozen=True)
class MCRecord:
    """One question about one video. ``answer`` is an index into ``choices`` or ``None``."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int | None = None
    family: str = "all"
    prefix: str = ""
    frames: tuple[Path, ...] | None = None
    embeddings: Path | None = None
    embeddings_key: str | None = None
    video: Path | None = None
    source: str = ""  # "file:line", for error messages
    extra: dict = field(default_factory=dict, compare=False)
    # False when the file gave no id (the default "line-<n>" names a line, not a sample: two files
    # both have a "line-1", which says nothing about whether they share a sample)
    id_given: bool = field(default=True, compare=False)

    @property
    def labelled(self) -> bool:
        return self.answer is not None


def _err(where: str, msg: str) -> RecordError:
    return RecordError(f"{where}: {msg}")


def _string(obj: dict, key: str, where: str, default: str | None = None) -> str:
    if key not in obj:
        if default is None:
            raise _err(where, f"missing required key {key!r}")
        return default
    v = obj[key]
    if not isinstance(v, str):
        raise _err(where, f"{key!r} must be a string, got {type(v).__name__}")
    return v


def parse_record(obj, *, where: str, base: Path, check_files: bool = True, default_id: str = "") -> MCRecord:
    """Validate one decoded JSON value; paths are resolved against ``base``."""
    if not isinstance(obj, dict):
        raise _err(where, f"a record must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise _err(where, f"unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    question = _string(obj, "question", where)
    if not question.strip():
        raise _err(where, "'question' is empty")
    choices = obj.get("choices")
    if choices is None:
        if "answer" in obj:
            raise _err(where, "'answer' needs 'choices'")
        choices = []  # unlabelled prompt: fidelity compares next-token distributions over the vocabulary
    elif not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise _err(where, f"'choices' must be a non-empty list of non-empty strings, got {choices!r}")
    if len(set(choices)) != len(choices):
        raise _err(where, f"'choices' has duplicates: {choices!r}")
    answer = obj.get("answer")
    if answer is not None:
        if isinstance(answer, bool) or not isinstance(answer, (int, str)):
            raise _err(where, f"'answer' must be an index into 'choices' or one of them, got {answer!r}")
        if isinstance(answer, str):
            if answer not in choices:
                raise _err(where, f"'answer' {answer!r} is not one of the choices {choices!r}")
            answer = choices.index(answer)
        elif not 0 <= answer < len(choices):
            raise _err(where, f"'answer' index {answer} is out of range for {len(choices)} choices")
    given = [k for k in VISUAL_KEYS if k in obj]
    if len(given) != 1:
        raise _err(where, "give exactly one of 'frames' (image files), 'video' (a video file) and 'embeddings' "
                          f"(.npy/.safetensors), got {given or 'none'}")
    has_frames, has_emb = given == ["frames"], given == ["embeddings"]
    frames = emb = video = None
    if given == ["video"]:
        v = _string(obj, "video", where)
        if not v:
            raise _err(where, "'video' is empty")
        video = base / v
        if check_files and not video.is_file():
            raise _err(where, f"video file {v!r} not found (looked in {base})")
    elif has_frames:
        fr = obj["frames"]
        if not isinstance(fr, list) or not fr or not all(isinstance(f, str) and f for f in fr):
            raise _err(where, "'frames' must be a non-empty list of image file paths")
        frames = tuple(base / f for f in fr)
        if check_files:
            for f, p in zip(fr, frames):
                if not p.is_file():
                    raise _err(where, f"frame file {f!r} not found (looked in {base})")
    elif has_emb:
        e = _string(obj, "embeddings", where)
        if not e.endswith((".npy", ".safetensors")):
            raise _err(where, f"'embeddings' must be a .npy or .safetensors file, got {e!r}")
        emb = base / e
        if check_files and not emb.is_file():
            raise _err(where, f"embeddings file {e!r} not found (looked in {base})")
    key = obj.get("embeddings_key")
    if key is not None and (not isinstance(key, str) or not has_emb):
        raise _err(where, "'embeddings_key' must be a string and goes with 'embeddings'")
    return MCRecord(
        id=_string(obj, "id", where, default=default_id or where),
        question=question, choices=tuple(choices), answer=answer, family=_string(obj, "family", where, "all"),
        prefix=_string(obj, "prefix", where, ""), frames=frames, embeddings=emb, embeddings_key=key, video=video,
        source=where, id_given="id" in obj,
    )


def load_jsonl(path: str | os.PathLike, *, check_files: bool = True) -> list[MCRecord]:
    """Read and validate every record of a JSONL file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    out: list[MCRecord] = []
    ids: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            where = f"{path} line {n}"
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                raise _err(where, f"not valid JSON ({e.msg} at column {e.colno})") from None
            rec = parse_record(obj, where=where, base=path.parent, check_files=check_files, default_id=f"line-{n}")
            if rec.id in ids:
                raise _err(where, f"duplicate id {rec.id!r} (first on line {ids[rec.id]})")
            ids[rec.id] = n
            out.append(rec)
    if not out:
        raise RecordError(f"{path}: no records")
    return out


def write_jsonl(path: str | os.PathLike, objects: Sequence[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for o in objects:
            fh.write(json.dumps(o) + "\n")
    return path


def load_embeddings(record: MCRecord):
    """The record's precomputed visual embeddings as a float32 ``(V, hidden)`` torch tensor
    (``(frames, tokens, hidden)`` files are flattened); RecordError naming the record otherwise."""
    import numpy as np
    import torch

    p = record.embeddings
    if p is None:
        raise RecordError(f"{record.source}: the record has no 'embeddings'")
    try:
        if p.suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(p))
            key = record.embeddings_key
            if key is None:
                if len(tensors) != 1:
                    raise RecordError(f"{record.source}: {p.name} holds {sorted(tensors)}; name one in "
                                      "'embeddings_key'")
                key = next(iter(tensors))
            if key not in tensors:
                raise RecordError(f"{record.source}: {p.name} has no tensor {key!r} (has {sorted(tensors)})")
            a = tensors[key]
    except RecordError:
        raise
    except Exception as e:  # noqa: BLE001 — any unreadable file is the record's fault
        raise RecordError(f"{record.source}: cannot read embeddings {p.name}: {e}") from None
    if a.ndim == 3:
        a = a.reshape(-1, a.shape[-1])
    if a.ndim != 2 or a.shape[0] == 0 or not np.issubdtype(a.dtype, np.floating):
        raise RecordError(f"{record.source}: embeddings {p.name} must be a float (V, hidden) or (frames, tokens, "
                          f"hidden) array, got {a.dtype} {a.shape}")
    if not np.isfinite(a).all():
        raise RecordError(f"{record.source}: embeddings {p.name} contain NaN or inf")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def load_video(record: MCRecord, *, num_frames: int | None = None, fps: float | None = None):
    """Decode the record's ``video`` (or stack its ``frames``) with transformers' video loader.

    Returns ``(frames (T, H, W, 3) uint8 numpy, metadata)``: transformers' ``VideoMetadata``
    (source fps, the sampled frame indices) for a video file, ``None`` for image frames. Sampling:
    see the module docstring. RecordError names the record when the file cannot be decoded.
    """
    import numpy as np

    if record.frames is not None:
        from PIL import Image

        arrays = []
        for p in record.frames:
            try:
                with Image.open(p) as im:
                    arrays.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except OSError as e:
                raise RecordError(f"{record.source}: cannot read frame {p.name}: {e}") from None
        if len({a.shape for a in arrays}) != 1:
            raise RecordError(f"{record.source}: the frames differ in size: {sorted({a.shape for a in arrays})}")
        frames = np.stack(arrays)
        if num_frames is not None:
            if num_frames > len(frames):
                raise RecordError(f"{record.source}: asked for {num_frames} frames, the record has {len(frames)}")
            frames = frames[np.arange(num_frames) * len(frames) // num_frames]
        return frames, None
    if record.video is None:
        raise RecordError(f"{record.source}: the record has neither 'video' nor 'frames'")
    from .._deps import require

    require("av", feature="video records", install="'autoprune[video]' (PyAV)")
    from transformers.video_utils import load_video as hf_load_video

    try:
        frames, meta = hf_load_video(str(record.video), num_frames=num_frames, fps=fps, backend="pyav")
    except Exception as e:  # noqa: BLE001 — PyAV's and transformers' errors: the file is at fault
        raise RecordError(f"{record.source}: cannot decode video {record.video.name}: {type(e).__name__}: {e}") from None
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[0] == 0:
        raise RecordError(f"{record.source}: video {record.video.name} decoded to no frames")
    return frames, meta


def probe_video(record: MCRecord) -> None:
    """Decode the first frame of the record's ``video`` (a cheap check that the file is a video,
    for records decoded only later); RecordError naming the record otherwise. No-op for others."""
    if record.video is None:
        return
    from .._deps import require

    require("av", feature="video records", install="'autoprune[video]' (PyAV)")
    import av

    try:
        with av.open(str(record.video)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            next(container.decode(video=0))
    except Exception as e:  # noqa: BLE001 — PyAV's errors (and StopIteration): the file is at fault
        raise RecordError(f"{record.source}: cannot decode video {record.video.name}: {type(e).__name__}: {e}") from None


def _visual_key(r: MCRecord) -> tuple:
    if r.video is not None:
        return ("video", r.video.resolve())
    if r.frames is not None:
        return ("frames", tuple(f.resolve() for f in r.frames))
    return ("embeddings", r.embeddings.resolve() if r.embeddings is not None else None, r.embeddings_key)


def find_overlap(records: Sequence[MCRecord], held_out: Sequence[MCRecord]) -> list[tuple[MCRecord, MCRecord, str]]:
    """The records of ``held_out`` that repeat one of ``records``: ``(held-out record, its twin,
    why)`` — the same id (where both files give one), or the same visual input (the same file,
    after resolving paths) with the same question (whitespace and case aside)."""
    by_id = {r.id: r for r in records if r.id_given}
    by_input = {(_visual_key(r), " ".join(r.question.lower().split())): r for r in records}
    out = []
    for h in held_out:
        twin = by_id.get(h.id) if h.id_given else None
        if twin is not None:
            out.append((h, twin, f"same id {h.id!r}"))
            continue
        twin = by_input.get((_visual_key(h), " ".join(h.question.lower().split())))
        if twin is not None:
            kind, path = _visual_key(h)[:2]
            name = path[0].name + ", …" if kind == "frames" else getattr(path, "name", path)
            out.append((h, twin, f"same {kind} {name} and question"))
    return out
