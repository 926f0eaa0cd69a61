import json

from autoprune.cli import main
from autoprune.cost.profile_table import table_path
from hw_fixtures import TINY_BF16, linear_table


def test_gpus_lists_the_registry_with_family_defaults(capsys):
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    for gpu_id in ("a100-sxm4-80gb", "a100-pcie-40gb", "h100-sxm5-80gb", "h200-sxm-141gb", "l4", "b200"):
        assert gpu_id in out
    assert "a100 (default)" in out and "dense" in out


def test_gpus_shows_which_gpus_have_measured_tables(capsys, tmp_path):
    linear_table(TINY_BF16, gpu="h100-sxm5-80gb").save(table_path(tmp_path, "h100-sxm5-80gb", TINY_BF16.name))
    assert main(["gpus", "--json", "--profile-dir", str(tmp_path)]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["h100-sxm5-80gb"]["measured"] == [TINY_BF16.name]
    assert rows["a100-sxm4-80gb"]["measured"] == []


def test_gpus_resolve_explains_the_choice(capsys):
    assert main(["gpus", "--resolve", "a100"]) == 0
    assert "a100 -> a100-sxm4-80gb (family-default" in capsys.readouterr().out


def test_gpus_resolve_of_an_unknown_name_is_an_error_with_close_matches(capsys):
    assert main(["gpus", "--resolve", "a1000"]) == 2
    err = capsys.readouterr().err
    assert "unknown GPU 'a1000'" in err and "close matches" in err
