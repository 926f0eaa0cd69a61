"""JSONL records: the documented format loads; every bad record names its line."""

import json

import numpy as np
import pytest

from autoprune.tasks.records import RecordError, load_jsonl


def _write(tmp_path, lines, files=("a.npy",)):
    for f in files:
        np.save(tmp_path / f, np.zeros((4, 8), dtype=np.float32))
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


GOOD = {"id": "x", "question": "count red ring", "choices": ["1", "2", "3", "4"], "answer": 1,
        "embeddings": "a.npy", "family": "count"}


def test_good_records_load(tmp_path):
    p = _write(tmp_path, ["# comment", GOOD, "", {**GOOD, "id": "y", "answer": "4"}])
    recs = load_jsonl(p)
    assert [r.id for r in recs] == ["x", "y"]
    assert recs[0].answer == 1 and recs[1].answer == 3
    assert recs[0].embeddings == tmp_path / "a.npy" and recs[0].family == "count"


def test_unlabelled_records_load(tmp_path):
    rec = {k: v for k, v in GOOD.items() if k not in ("answer", "choices", "id")}
    recs = load_jsonl(_write(tmp_path, [rec]))
    assert recs[0].answer is None and recs[0].choices == () and recs[0].id == "line-1"


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ({**GOOD, "colour": 1}, "unknown key"),
    ({k: v for k, v in GOOD.items() if k != "question"}, "missing required key 'question'"),
    ({**GOOD, "question": "  "}, "empty"),
    ({**GOOD, "choices": []}, "non-empty list"),
    ({**GOOD, "choices": ["1", "1"]}, "duplicates"),
    ({**GOOD, "answer": 7}, "out of range"),
    ({**GOOD, "answer": "five"}, "not one of the choices"),
    ({**GOOD, "answer": True}, "'answer' must be"),
    ({**GOOD, "frames": ["f.png"]}, "exactly one of"),
    ({k: v for k, v in GOOD.items() if k != "embeddings"}, "exactly one of"),
    ({**GOOD, "embeddings": "missing.npy"}, "not found"),
    ({**GOOD, "embeddings": "a.txt"}, ".npy or .safetensors"),
    ({k: v for k, v in {**GOOD, "frames": ["nope.png"]}.items() if k != "embeddings"}, "frame file"),
    ({k: v for k, v in GOOD.items() if k != "choices"}, "'answer' needs 'choices'"),
    ({**GOOD, "id": 3}, "'id' must be a string"),
])
def test_a_bad_record_names_its_line(tmp_path, bad, message):
    p = _write(tmp_path, [GOOD, {**GOOD, "id": "y"}, "", bad])
    with pytest.raises(RecordError, match=rf"line 4: .*{message}"):
        load_jsonl(p)


def test_duplicate_ids_name_both_lines(tmp_path):
    p = _write(tmp_path, [GOOD, GOOD])
    with pytest.raises(RecordError, match="line 2: duplicate id 'x' \\(first on line 1\\)"):
        load_jsonl(p)


def test_empty_or_missing_files_are_errors(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        load_jsonl(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n# nothing\n")
    with pytest.raises(RecordError, match="no records"):
        load_jsonl(tmp_path / "e.jsonl")
