"""Atomic writes: a reader never sees half a file, and files get the permissions the umask gives."""

import os
import stat

import pytest

from autoprune import _io
from autoprune.search import SearchConfig, run_search


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask):
        os.umask(mask)

    yield set_
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert _mode(_io.write_text(tmp_path / "a.txt", "x")) == expected
    assert _mode(_io.write_json(tmp_path / "b.json", {"a": 1})) == expected


def test_an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    p = _io.write_text(tmp_path / "a.txt", "old")
    _io.write_text(p, "new")
    assert p.read_text() == "new"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_every_file_a_search_exports_is_readable_by_others_under_umask_022(tmp_path, umask):
    umask(0o022)
    r = run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=8, references=("none", "fastv"),
                                out=str(tmp_path), show_progress=False), log=lambda *_: None)
    files = [p for p in r.run_dir.rglob("*") if p.is_file() and not p.name.startswith("study.db")]
    assert any(p.suffix == ".json" for p in files) and any(p.name == "trials.csv" for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o644 for p in files}
