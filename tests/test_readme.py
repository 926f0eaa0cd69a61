"""README's Python snippet runs verbatim after a (short) default study."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippet() -> str:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "autoprune.reduce" in b)


@pytest.mark.skipif(not README.is_file(), reason="an installed wheel has no README beside the tests")
def test_the_readme_snippet_runs_after_the_default_study(tmp_path):
    from autoprune.cli import main

    rc = main(["search", "--gpu", "a100", "--budget", "4x", "--trials", "10", "--references", "none,fastv",
               "--model-option", "n=24", "--model-option", "validation_n=24", "--out", str(tmp_path / "runs"),
               "--no-progress"])
    assert rc == 0
    code = _snippet() + "\nprint(tuple(out.shape))\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "(1, 4)"
