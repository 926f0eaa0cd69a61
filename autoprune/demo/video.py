"""Procedural long videos with multiple-choice questions whose evidence is small and query-dependent.

A video has ``F`` frames of ``16 × 16`` RGB pixels split into a ``2 × 2`` grid of cells
(one visual token per cell: 4 tokens per frame). Each frame shows:

- **clutter**: a dim background tint and, in every cell, a texture from a fixed bank of
  random dim specks (never brighter than 0.5);
- **distractor objects**: ``NUM_TRACKS`` objects that persist over time, move between cells
  (a random walk) and now and then change shape or colour;
- **targets**: the objects a question is about, inserted in a few frames only.

An object is a ``6 × 6`` glyph (:data:`SHAPES`) drawn in a saturated colour (:data:`COLOURS`)
inside one cell. Question families and the evidence each needs:

========== ======================================================= ============== ==========
family     question (demo words)                                   evidence       choices
========== ======================================================= ============== ==========
needle     ``needle <shape> colour|place``: colour / cell of the   1 token        4 colours /
           only object of that shape                                              4 cells
count      ``count <colour> <shape>``: in how many frames it shows  1–4 tokens     1 2 3 4
order      ``order <c1> <s1> <c2> <s2>``: did X appear before Y     2 tokens       yes no
where      ``where <colour> <shape>``: which quarter of the video   1 token        q1 … q4
========== ======================================================= ============== ==========

Distractors never take the queried identity (the needle's shape, the counted / ordered /
located colour+shape), so every answer is fixed by the target cells alone, and those are
between 1 and 4 of the video's ``4·F`` tokens: a selection that does not look at the
question keeps them only by chance.

Everything is a pure function of a per-sample ``uint64`` seed, through a counter-based
hash (splitmix64) evaluated on whole arrays: a batch is generated vectorised, and a
sample is the same whichever batch it is generated in. Splits own disjoint seed ranges
(:data:`SPLIT_BASE`); sample ``i`` of a split has seed ``base + i`` (``test`` videos longer
than the default come from their own sub-range).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

__all__ = [
    "FAMILIES", "SHAPES", "COLOURS", "CELLS", "QUARTERS", "NUM_TRACKS", "FRAME_SIZE", "CELL_SIZE",
    "TOKENS_PER_FRAME", "QUESTION_LEN", "SPLIT_BASE", "Vocab", "VOCAB", "VideoBatch", "generate",
    "split_seeds", "make_split", "render", "answer_from_cells", "encode_question",
]

FAMILIES = ("needle", "count", "order", "where")
SHAPES = ("square", "cross", "ring", "triangle", "diamond", "bars")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
CELLS = ("topleft", "topright", "bottomleft", "bottomright")
QUARTERS = ("q1", "q2", "q3", "q4")
COUNTS = ("1", "2", "3", "4")
NUM_TRACKS = 3
FRAME_SIZE = 16
CELL_SIZE = 8
TOKENS_PER_FRAME = (FRAME_SIZE // CELL_SIZE) ** 2
# [family ask ?] [choice1 … choice4] [object words, right-aligned]: the words naming what to look
# for come last, next to where the answer is read (the last position).
QUESTION_LEN = 11
MAX_FRAMES = 4096

_MASK64 = (1 << 64) - 1
# Disjoint seed ranges; a split's sample i has seed base + i.
SPLIT_BASE = {"train": 0, "val": 1 << 48, "test": 2 << 48}
_SPLIT_SIZE = 1 << 48
# Test videos of another length than the default live in their own sub-range.
_LENGTH_OFFSET = 1 << 32
DEFAULT_FRAMES = 64


# ---------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class Vocab:
    """The demo model's word vocabulary (text tokens only; visual tokens are embeddings)."""

    words: tuple[str, ...]

    def __post_init__(self):
        if len(set(self.words)) != len(self.words):
            raise ConfigError("Vocab words must be unique")

    @property
    def ids(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        try:
            return self.ids[word]
        except KeyError:
            raise ConfigError(f"word {word!r} is not in the demo vocabulary") from None

    def encode(self, words) -> list[int]:
        return [self.id(w) for w in words]

    def decode(self, ids) -> list[str]:
        return [self.words[int(i)] for i in ids]


_SPECIAL = ("<pad>", "<bos>", "<video>", "?", "none")
VOCAB = Vocab(_SPECIAL + FAMILIES + ("colour", "place") + SHAPES + COLOURS + CELLS + QUARTERS + COUNTS
              + ("yes", "no"))
_W = VOCAB.ids
PREFIX_IDS = (_W["<bos>"], _W["<video>"])


# ----------------------------------------------------------------- hash random numbers
def _stream(name: str) -> int:
    return zlib.crc32(name.encode()) * 0x9E3779B97F4A7C15 & _MASK64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Rand:
    """Counter-based random numbers: value ``[i, j…]`` = hash(seed_i, stream, flat index j)."""

    def __init__(self, seeds: np.ndarray):
        with np.errstate(over="ignore"):
            self.keys = _mix(seeds.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x632BE59BD9B4E019))

    def bits(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape)) if shape else 1
        with np.errstate(over="ignore"):
            ctr = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(_stream(name))
            out = _mix(self.keys[:, None] ^ _mix(ctr)[None, :])
        return out.reshape((len(self.keys),) + tuple(shape))

    def uniform(self, name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        return (self.bits(name, shape) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def integers(self, name: str, n, shape: tuple[int, ...] = ()) -> np.ndarray:
        """Uniform in ``[0, n)``; ``n`` may be an array broadcast against the result."""
        u = self.uniform(name, shape)
        return np.minimum((u * n).astype(np.int64), np.asarray(n) - 1)


# ------------------------------------------------------------------------ pixel banks
def _glyphs() -> np.ndarray:
    art = {
        "square": ["######", "######", "##..##", "##..##", "######", "######"],
        "cross": ["..##..", "..##..", "######", "######", "..##..", "..##.."],
        "ring": [".####.", "##..##", "#....#", "#....#", "##..##", ".####."],
        "triangle": ["......", "..##..", ".####.", ".####.", "######", "######"],
        "diamond": ["..##..", ".####.", "######", "######", ".####.", "..##.."],
        "bars": ["#.#.#.", "#.#.#.", "#.#.#.", "#.#.#.", "#.#.#.", "#.#.#."],
    }
    out = np.zeros((len(SHAPES), CELL_SIZE, CELL_SIZE), dtype=np.float32)
    for i, s in enumerate(SHAPES):
        for r, row in enumerate(art[s]):
            for c, ch in enumerate(row):
                out[i, r + 1, c + 1] = ch == "#"
    return out


GLYPHS = _glyphs()  # (S, 8, 8) 0/1
PALETTE = np.array(
    [[0.95, 0.1, 0.1], [0.1, 0.9, 0.15], [0.15, 0.25, 1.0], [0.95, 0.9, 0.1], [0.9, 0.15, 0.9], [0.1, 0.9, 0.95]],
    dtype=np.float32,
)
NUM_TEXTURES = 64


def _textures() -> np.ndarray:
    g = np.random.default_rng(20261124)
    tex = g.uniform(0.0, 0.08, size=(NUM_TEXTURES, CELL_SIZE, CELL_SIZE, 3)).astype(np.float32)
    for t in range(NUM_TEXTURES):
        for _ in range(g.integers(2, 7)):
            r, c = g.integers(0, CELL_SIZE, size=2)
            tex[t, r, c] = g.uniform(0.15, 0.5, size=3)
    return tex


TEXTURES = _textures()  # (T, 8, 8, 3)


# ---------------------------------------------------------------------------- batch
@dataclass
class VideoBatch:
    """Symbolic videos and their questions (numpy; render pixels with :func:`render`).

    Shapes (``b`` samples, ``F`` frames, 4 cells per frame):
    ``shape, colour (b, F, 4)`` int8, −1 where a cell is empty; ``texture (b, F, 4)`` int16;
    ``tint (b, F, 3)`` float32; ``question (b, 11)`` token ids ``[family ask ? c1 c2 c3 c4
    o1 o2 o3 o4]`` (``ask`` and unused object slots are ``none``; object words right-aligned);
    ``choices (b, 4)`` token ids of the choices (``none`` where unused),
    ``choice_mask (b, 4)``; ``answer (b,)`` index into ``choices``; ``evidence (b, F, 4)``
    the target cells (what the answer depends on).
    """

    seeds: np.ndarray
    family: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    tint: np.ndarray
    question: np.ndarray
    choices: np.ndarray
    choice_mask: np.ndarray
    answer: np.ndarray
    evidence: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.shape.shape[1]

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def family_names(self) -> list[str]:
        return [FAMILIES[int(f)] for f in self.family]

    def select(self, idx) -> VideoBatch:
        idx = np.asarray(idx)
        return VideoBatch(**{k: getattr(self, k)[idx] for k in (
            "seeds", "family", "shape", "colour", "texture", "tint", "question", "choices", "choice_mask",
            "answer", "evidence")}, meta=dict(self.meta))

    @staticmethod
    def concat(batches) -> VideoBatch:
        batches = list(batches)
        if len({b.frames for b in batches}) != 1:
            raise ConfigError("cannot concatenate videos of different lengths")
        keys = ("seeds", "family", "shape", "colour", "texture", "tint", "question", "choices", "choice_mask",
                "answer", "evidence")
        return VideoBatch(**{k: np.concatenate([getattr(b, k) for b in batches]) for k in keys},
                          meta=dict(batches[0].meta))

    def question_words(self, i: int) -> list[str]:
        """The 11 question tokens of sample ``i`` as words."""
        return VOCAB.decode(self.question[i])

    def question_text(self, i: int) -> str:
        """The question as demo text: ``"needle colour ring"``, ``"count red ring"``, …"""
        w = self.question_words(i)
        words = [w[0]] + [x for x in [w[1]] + w[7:] if x != "none"]
        return " ".join(words)

    def choice_words(self, i: int) -> list[str]:
        return [w for w, m in zip(VOCAB.decode(self.choices[i]), self.choice_mask[i]) if m]


def _check_frames(frames: int) -> None:
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or not 4 <= frames <= MAX_FRAMES:
        raise ConfigError(f"frames must be an integer in [4, {MAX_FRAMES}], got {frames!r}")


def _permutation_prefix(r: _Rand, name: str, b: int, n: int, k: int) -> np.ndarray:
    """First ``k`` entries of a random permutation of ``range(n)`` per row: ``(b, k)``."""
    return np.argsort(r.uniform(name, (n,)), axis=1, kind="stable")[:, :k]


def generate(seeds, families, frames: int = DEFAULT_FRAMES, tracks: int = NUM_TRACKS) -> VideoBatch:
    """Videos and questions for per-sample ``seeds`` (uint64) and ``families`` (indices into
    :data:`FAMILIES`), each with ``frames`` frames. Pure function of its arguments.

    ``tracks < NUM_TRACKS`` hides the later distractor tracks (an easier video for a
    training curriculum; everything else is the same sample).
    """
    _check_frames(frames)
    if isinstance(tracks, bool) or not isinstance(tracks, (int, np.integer)) or not 0 <= tracks <= NUM_TRACKS:
        raise ConfigError(f"tracks must be an integer in [0, {NUM_TRACKS}], got {tracks!r}")
    seeds = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    fam = np.asarray(families, dtype=np.int64).reshape(-1)
    if fam.shape != seeds.shape:
        raise ConfigError(f"{len(seeds)} seeds but {len(fam)} families")
    if fam.size and (fam.min() < 0 or fam.max() >= len(FAMILIES)):
        raise ConfigError(f"families must be indices into {FAMILIES}")
    b, F, S, C, K = len(seeds), int(frames), len(SHAPES), len(COLOURS), NUM_TRACKS
    # The frame count is part of the key: the same seed at another length is another video.
    r = _Rand(seeds * np.uint64(8191) + np.uint64(F))

    # ---- targets: up to 4 (frame, cell, shape, colour) insertions per sample
    is_needle, is_count, is_order, is_where = (fam == i for i in range(4))
    tshape = r.integers("t_shape", S, (4,))
    tcol = r.integers("t_colour", C, (4,))
    # order: Y must differ from X
    same = is_order & (tshape[:, 1] == tshape[:, 0]) & (tcol[:, 1] == tcol[:, 0])
    tcol[same, 1] = (tcol[same, 1] + 1 + r.integers("t_recol", C - 1)[same]) % C
    # count/where: every insertion is the same identity
    rep = is_count | is_where
    tshape[rep] = tshape[rep, :1]
    tcol[rep] = tcol[rep, :1]
    n_targets = np.where(is_needle | is_where, 1, np.where(is_order, 2, 1 + r.integers("n_count", 4)))
    tframe = _permutation_prefix(r, "t_frame", b, F, 4)
    tcell = r.integers("t_cell", 4, (4,))
    tvalid = np.arange(4)[None, :] < n_targets[:, None]

    # ---- distractor tracks: random walk over cells, occasional identity changes
    pos = (r.integers("d_pos0", 4, (K, 1)) + np.cumsum(
        (r.uniform("d_move", (K, F)) < 0.3) * (1 + r.integers("d_step", 3, (K, F))), axis=2)) % 4
    dshape = (r.integers("d_shape0", S, (K, 1)) + np.cumsum(
        (r.uniform("d_reshape", (K, F)) < 0.08) * (1 + r.integers("d_dshape", S - 1, (K, F))), axis=2)) % S
    dcol = (r.integers("d_colour0", C, (K, 1)) + np.cumsum(
        (r.uniform("d_recolour", (K, F)) < 0.08) * (1 + r.integers("d_dcolour", C - 1, (K, F))), axis=2)) % C
    visible = (r.uniform("d_visible", (K, F)) < 0.85) & (np.arange(K)[None, :, None] < tracks)
    # Distractors never take a queried identity: shift them off it.
    for _ in range(3):
        bad = is_needle[:, None, None] & (dshape == tshape[:, :1, None])
        dshape = np.where(bad, (dshape + 1) % S, dshape)
        bad = np.zeros_like(bad)
        for j in (0, 1):
            active = (rep | is_order) if j == 0 else is_order
            bad |= active[:, None, None] & (dshape == tshape[:, j, None, None]) & (dcol == tcol[:, j, None, None])
        dcol = np.where(bad, (dcol + 1) % C, dcol)

    shape = np.full((b, F, 4), -1, dtype=np.int8)
    colour = np.full((b, F, 4), -1, dtype=np.int8)
    for k in reversed(range(K)):  # track 0 is drawn last: it hides the others in its cell
        bi, ti = np.nonzero(visible[:, k])
        ci = pos[bi, k, ti]
        shape[bi, ti, ci] = dshape[bi, k, ti]
        colour[bi, ti, ci] = dcol[bi, k, ti]
    evidence = np.zeros((b, F, 4), dtype=bool)
    bi, ji = np.nonzero(tvalid)
    shape[bi, tframe[bi, ji], tcell[bi, ji]] = tshape[bi, ji]
    colour[bi, tframe[bi, ji], tcell[bi, ji]] = tcol[bi, ji]
    evidence[bi, tframe[bi, ji], tcell[bi, ji]] = True

    # ---- clutter
    texture = r.integers("texture", NUM_TEXTURES, (F, 4)).astype(np.int16)
    tint = (r.uniform("tint", (F, 3)) * 0.15).astype(np.float32)

    # ---- question, choices, answer
    W = _W
    shape_ids = np.array([W[x] for x in SHAPES])
    colour_ids = np.array([W[x] for x in COLOURS])
    none = W["none"]
    attrs = np.full((b, 4), none, dtype=np.int64)  # right-aligned object words
    ask = np.full(b, none, dtype=np.int64)
    choices = np.full((b, 4), none, dtype=np.int64)
    choice_mask = np.ones((b, 4), dtype=bool)
    answer = np.zeros(b, dtype=np.int64)

    # needle: "needle colour|place <shape>"
    ask_place = r.uniform("ask_place") < 0.5
    m = is_needle
    attrs[m, 3] = shape_ids[tshape[m, 0]]
    ask[m] = np.where(ask_place[m], W["place"], W["colour"])
    # colour choices: the right one and 3 others; position p holds the right colour if p == slot,
    # else the others in order
    others = np.argsort(r.uniform("n_choice", (C,)) + (np.arange(C)[None, :] == tcol[:, :1]) * 2.0, axis=1)[:, :3]
    slot = r.integers("n_slot", 4)
    p = np.arange(4)[None, :]
    gather = np.where(p == slot[:, None], 0, np.where(p < slot[:, None], p + 1, p))
    col_choice = np.take_along_axis(np.concatenate([tcol[:, :1], others], axis=1), gather, axis=1)
    cell_ids = np.array([W[x] for x in CELLS])
    choices[m] = np.where(ask_place[m, None], cell_ids[None, :], colour_ids[col_choice[m]])
    answer[m] = np.where(ask_place[m], tcell[m, 0], slot[m])
    # count: "count <colour> <shape>": in how many frames
    m = is_count
    attrs[m, 2] = colour_ids[tcol[m, 0]]
    attrs[m, 3] = shape_ids[tshape[m, 0]]
    choices[m] = np.array([W[x] for x in COUNTS])
    answer[m] = n_targets[m] - 1
    # order: "order <c1> <s1> <c2> <s2>": did X (first pair) appear before Y?
    m = is_order
    attrs[m] = np.stack([colour_ids[tcol[m, 0]], shape_ids[tshape[m, 0]], colour_ids[tcol[m, 1]],
                         shape_ids[tshape[m, 1]]], axis=1)
    choices[m] = np.array([W["yes"], W["no"], none, none])
    choice_mask[m] = np.array([True, True, False, False])
    answer[m] = np.where(tframe[m, 0] < tframe[m, 1], 0, 1)
    # where: "where <colour> <shape>": which quarter of the video
    m = is_where
    attrs[m, 2] = colour_ids[tcol[m, 0]]
    attrs[m, 3] = shape_ids[tshape[m, 0]]
    choices[m] = np.array([W[x] for x in QUARTERS])
    answer[m] = (tframe[m, 0] * 4) // F

    question = np.concatenate([np.array([W[f] for f in FAMILIES])[fam][:, None], ask[:, None],
                               np.full((b, 1), W["?"]), choices, attrs], axis=1)

    return VideoBatch(seeds=seeds, family=fam.astype(np.int8), shape=shape, colour=colour, texture=texture,
                      tint=tint, question=question, choices=choices, choice_mask=choice_mask, answer=answer,
                      evidence=evidence)


def split_seeds(split: str, n: int, frames: int = DEFAULT_FRAMES, start: int = 0) -> np.ndarray:
    """Seeds of samples ``start … start+n-1`` of ``split`` (at ``frames`` frames)."""
    if split not in SPLIT_BASE:
        raise ConfigError(f"unknown split {split!r}; known: {sorted(SPLIT_BASE)}")
    _check_frames(frames)
    if n < 0 or start < 0 or start + n > _LENGTH_OFFSET:
        raise ConfigError(f"split samples must lie in [0, {_LENGTH_OFFSET}), got start={start}, n={n}")
    base = SPLIT_BASE[split]
    if frames != DEFAULT_FRAMES:
        base += _LENGTH_OFFSET * (1 + int(frames))
    if base + start + n > SPLIT_BASE[split] + _SPLIT_SIZE:
        raise ConfigError(f"seed range of split {split!r} exceeded")
    return np.arange(base + start, base + start + n, dtype=np.uint64)


def make_split(split: str, n: int, frames: int = DEFAULT_FRAMES, start: int = 0) -> VideoBatch:
    """``n`` samples of ``split``; families cycle (needle, count, order, where) by sample index."""
    seeds = split_seeds(split, n, frames, start)
    fam = (np.arange(start, start + n) % len(FAMILIES)).astype(np.int64)
    out = generate(seeds, fam, frames)
    out.meta.update(split=split, start=start, frames=frames)
    return out


def encode_question(text: str, choices) -> np.ndarray:
    """Demo question text (``"count red ring"``: family, optional ``colour``/``place``, up to 4
    object words) and up to 4 one-word choices → the 11 question token ids."""
    words = text.split()
    if not words:
        raise ConfigError("empty question")
    ask = "none"
    if len(words) > 1 and words[1] in ("colour", "place"):
        ask, objs = words[1], words[2:]
    else:
        objs = words[1:]
    if len(objs) > 4:
        raise ConfigError(f"a demo question names at most 4 object words, got {len(objs)}: {text!r}")
    if len(choices) > 4:
        raise ConfigError(f"the demo model takes at most 4 choices, got {len(choices)}")
    ids = VOCAB.encode([words[0], ask, "?"] + list(choices) + ["none"] * (4 - len(choices))
                       + ["none"] * (4 - len(objs)) + objs)
    return np.asarray(ids, dtype=np.int64)


# ------------------------------------------------------------------------ rendering
def render(batch: VideoBatch, *, xp=np) -> np.ndarray:
    """RGB frames ``(b, F, 16, 16, 3)`` float32 in [0, 1] (numpy; see :func:`render_cells_torch`)."""
    cells = _render_cells_np(batch)  # (b, F, 4, 8, 8, 3)
    b, F = cells.shape[:2]
    img = cells.reshape(b, F, 2, 2, CELL_SIZE, CELL_SIZE, 3).transpose(0, 1, 2, 4, 3, 5, 6)
    return np.ascontiguousarray(img.reshape(b, F, FRAME_SIZE, FRAME_SIZE, 3))


def _render_cells_np(batch: VideoBatch) -> np.ndarray:
    has = batch.shape >= 0
    glyph = GLYPHS[np.maximum(batch.shape, 0)] * has[..., None, None]  # (b,F,4,8,8)
    col = PALETTE[np.maximum(batch.colour, 0)]  # (b,F,4,3)
    base = TEXTURES[batch.texture] + batch.tint[:, :, None, None, None, :]
    return np.where(glyph[..., None] > 0, col[:, :, :, None, None, :], base).astype(np.float32)


def render_cells_torch(batch: VideoBatch, device=None):
    """Cells ``(b, F·4, 8·8·3)`` float32 on ``device``: the patches the frame encoder reads.

    Same pixels as :func:`render` (cell ``k`` of a frame is row ``k // 2``, column ``k % 2``).
    """
    import torch

    tables = _torch_tables(device)
    sh = torch.as_tensor(batch.shape, device=device).long()
    co = torch.as_tensor(batch.colour, device=device).long()
    tx = torch.as_tensor(batch.texture, device=device).long()
    tint = torch.as_tensor(batch.tint, device=device)
    glyph = tables["glyphs"][sh.clamp_min(0)] * (sh >= 0)[..., None, None]
    col = tables["palette"][co.clamp_min(0)]
    base = tables["textures"][tx] + tint[:, :, None, None, None, :]
    cells = torch.where(glyph[..., None] > 0, col[:, :, :, None, None, :], base)
    b, F = sh.shape[:2]
    return cells.reshape(b, F * TOKENS_PER_FRAME, CELL_SIZE * CELL_SIZE * 3)


_TABLES: dict = {}


def _torch_tables(device):
    import torch

    key = str(device)
    if key not in _TABLES:
        _TABLES[key] = {"glyphs": torch.as_tensor(GLYPHS, device=device),
                        "palette": torch.as_tensor(PALETTE, device=device),
                        "textures": torch.as_tensor(TEXTURES, device=device)}
    return _TABLES[key]


# ---------------------------------------------------------------- answer from content
def answer_from_cells(batch: VideoBatch, i: int) -> str:
    """The right choice word of sample ``i``, recomputed from the cells and the question words
    alone (independent of how :func:`generate` placed the targets)."""
    words = batch.question_text(i).split()
    fam = words[0]
    sh, co = batch.shape[i], batch.colour[i]
    F = sh.shape[0]

    def frames_with(colour_word, shape_word):
        c, s = COLOURS.index(colour_word), SHAPES.index(shape_word)
        return sorted({int(t) for t, _ in zip(*np.nonzero((sh == s) & (co == c)))})

    if fam == "needle":
        s = SHAPES.index(words[2])
        hits = list(zip(*np.nonzero(sh == s)))
        if len(hits) != 1:
            raise ValueError(f"needle shape {words[2]} appears {len(hits)} times")
        t, k = hits[0]
        return COLOURS[co[t, k]] if words[1] == "colour" else CELLS[k]
    if fam == "count":
        return str(len(frames_with(words[1], words[2])))
    if fam == "order":
        x, y = frames_with(words[1], words[2]), frames_with(words[3], words[4])
        if len(x) != 1 or len(y) != 1:
            raise ValueError(f"order: X in {len(x)} frames, Y in {len(y)} frames")
        return "yes" if x[0] < y[0] else "no"
    if fam == "where":
        t = frames_with(words[1], words[2])
        if len(t) != 1:
            raise ValueError(f"where: target in {len(t)} frames")
        return QUARTERS[(t[0] * 4) // F]
    raise ValueError(f"unknown family {fam!r}")
