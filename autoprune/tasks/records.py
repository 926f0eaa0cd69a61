"""Multiple-choice video QA records and their JSONL file format.

One JSON object per line (blank lines and lines starting with ``#`` are skipped)::

    {"id": "clip-0007",                    optional; default "line-<n>"
     "family": "count",                    optional; groups per-family scores; default "all"
     "prefix": "",                         optional text before the video (generic models)
     "frames": ["clip-0007/000.png", ...], image files, relative to the JSONL's folder
     "embeddings": "clip-0007.npy",        or: precomputed visual embeddings, .npy or .safetensors,
                                           shape (V, hidden) or (frames, tokens, hidden)
     "embeddings_key": "visual",           optional: tensor name inside a .safetensors file
     "question": "count red ring",
     "choices": ["1", "2", "3", "4"],     optional only for unlabelled prompts (fidelity over
                                           the whole next-token distribution)
     "answer": 2}                          index into choices, or the choice text; optional
                                           (records without answers serve fidelity only)

Exactly one of ``frames`` and ``embeddings`` is given. A bad record raises
:class:`RecordError` naming the file and line number and what is wrong with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AutopruneError

__all__ = ["MCRecord", "RecordError", "load_jsonl", "parse_record", "write_jsonl"]

_KEYS = {"id", "family", "prefix", "frames", "embeddings", "embeddings_key", "question", "choices", "answer"}


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
    source: str = ""  # "file:line", for error messages
    extra: dict = field(default_factory=dict, compare=False)

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
    has_frames, has_emb = "frames" in obj, "embeddings" in obj
    if has_frames == has_emb:
        raise _err(where, "give exactly one of 'frames' (image files) and 'embeddings' (.npy/.safetensors)")
    frames = emb = None
    if has_frames:
        fr = obj["frames"]
        if not isinstance(fr, list) or not fr or not all(isinstance(f, str) and f for f in fr):
            raise _err(where, "'frames' must be a non-empty list of image file paths")
        frames = tuple(base / f for f in fr)
        if check_files:
            for f, p in zip(fr, frames):
                if not p.is_file():
                    raise _err(where, f"frame file {f!r} not found (looked in {base})")
    else:
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
        prefix=_string(obj, "prefix", where, ""), frames=frames, embeddings=emb, embeddings_key=key, source=where,
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
