import pytest
import torch

from autoprune.cost.latency import LatencyModel
from autoprune.cost.profile_table import ProfileTable
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout
from autoprune.profiler.environment import environment_info, mamba_kernel_status
from autoprune.profiler.layer_bench import activation_bytes, profile_shape, token_grid
from autoprune.profiler.random_model import build_block
from autoprune.profiler.timing import METHOD_WALL_CLOCK
from autoprune.schedule import Schedule
from hw_fixtures import TINY

QUICK = {"rep_ms": 1.0, "warmup_ms": 0.0, "min_reps": 2, "max_reps": 3, "retries": 0, "estimate_calls": 1}


@pytest.fixture(scope="module")
def tiny_table():
    torch.manual_seed(0)
    return profile_shape(TINY, device="cpu", tokens=[64, 96, 128], prefix_tokens=8, query_tokens=8, timer_kw=QUICK)


def test_token_grid_is_log_spaced_and_includes_its_ends():
    g = token_grid(512, 131072, 2)
    assert g[0] == 512 and g[-1] == 131072 and len(g) == 17
    assert all(b > a for a, b in zip(g, g[1:]))
    assert all(n % 8 == 0 for n in g)


def test_single_layers_of_the_8b_shape_fit_an_80gb_gpu_at_131k_tokens():
    weights = {"M": 110e6, "*": 42e6, "-": 176e6}
    for kind in "M*-":
        need = activation_bytes(NEMOTRON_H_8B, kind, 131072) + 2 * weights[kind]
        assert need < 0.85 * 80e9, (kind, need / 1e9)


def test_blocks_are_built_with_the_shape_and_random_weights():
    block, cfg = build_block(TINY, "M", "cpu", torch.float32)
    assert block.block_type == "linear_attention"
    assert block.mixer.num_heads == TINY.mamba_num_heads
    assert block.mixer.dt_bias.std() > 0  # heads differ
    out = block(torch.randn(1, 16, TINY.hidden_size))
    assert out.shape == (1, 16, TINY.hidden_size) and torch.isfinite(out).all()


def test_profiling_a_tiny_shape_on_the_cpu_gives_a_complete_table(tiny_table):
    t = tiny_table
    assert t.gpu == "cpu" and t.method == METHOD_WALL_CLOCK and t.is_cpu
    assert set(t.layers) == {"mamba", "mlp", "attention"}
    assert set(t.scoring) == {"attention", "mamba", "mamba_decay"}
    assert t.gather is not None and t.head is not None
    assert t.layers["mamba"].tokens == (64, 96, 128)
    assert t.scoring["mamba"].tokens == (64, 96, 128)  # all > prefix + query
    assert t.skipped == ()
    for key in ("torch", "transformers", "mamba_kernels", "fallback_warnings", "grid"):
        assert key in t.environment


def test_profile_json_round_trip_and_latency_model_reads_it(tiny_table, tmp_path):
    p = tiny_table.save(tmp_path / "cpu" / f"{TINY.name}.json")
    back = ProfileTable.load(p)
    assert back.to_dict() == tiny_table.to_dict()
    m = LatencyModel(TINY, TokenLayout(prefix=8, visual=96, query=8), "cpu", search_dirs=[tmp_path])
    est = m.estimate(Schedule(keep=(1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25)))
    assert est.source == "table" and est.gpu == "cpu"
    assert "cpu-wall-clock-table" in est.flags
    assert est.latency_ms > 0 and est.baseline_ms > 0


def test_time_budget_records_what_it_left_out():
    t = profile_shape(TINY, device="cpu", tokens=[64, 128], kinds="-", prefix_tokens=8, query_tokens=8,
                      scoring=False, gather=False, head=False, timer_kw=QUICK, time_budget_s=0.0)
    assert [(s["what"], s["tokens"], s["reason"]) for s in t.skipped] == [("mlp", 128, "time budget exhausted")]
    assert t.layers["mlp"].tokens == (64,)  # the smallest point always runs
    assert t.missing_kinds() == ["attention", "mamba"]


def test_unknown_kinds_are_refused():
    from autoprune.errors import ConfigError

    with pytest.raises(ConfigError, match="no layer kind"):
        profile_shape(TINY, device="cpu", kinds="E", tokens=[64])


def test_environment_reports_versions_and_mamba_kernels():
    env = environment_info("cpu")
    assert env["torch"] == torch.__version__ and env["cuda"] == torch.version.cuda
    assert "mamba2_chunk_scan" in mamba_kernel_status() or "mamba_chunk_scan_combined" in mamba_kernel_status()


def test_out_of_memory_points_are_skipped_and_larger_ones_not_tried(monkeypatch):
    import autoprune.profiler.layer_bench as lb

    calls = []
    real = lb.build_block

    def block_that_fails_big(shape, kind, device, dtype):
        block, cfg = real(shape, kind, device, dtype)
        fwd = block.forward

        def forward(x, *a, **kw):
            calls.append(x.shape[1])
            if x.shape[1] >= 96:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 99 GiB")
            return fwd(x, *a, **kw)

        block.forward = forward
        return block, cfg

    monkeypatch.setattr(lb, "build_block", block_that_fails_big)
    t = profile_shape(TINY, device="cpu", tokens=[64, 96, 128], kinds="-", prefix_tokens=8, query_tokens=8,
                      scoring=False, gather=False, head=False, timer_kw=QUICK)
    assert t.layers["mlp"].tokens == (64,)
    assert [(s["tokens"], s["reason"][:13]) for s in t.skipped] == [(96, "out of memory"), (128, "larger than a")]
    assert 128 not in calls


def test_a_failing_point_is_recorded_and_the_other_series_go_on(monkeypatch):
    import autoprune.profiler.layer_bench as lb

    real = lb._gather_setup

    def broken(ctx):
        setup, need = real(ctx)

        def bad_setup(n, pos):
            raise RuntimeError("Triton compilation failed")
        return bad_setup, need

    monkeypatch.setattr(lb, "_gather_setup", broken)
    t = profile_shape(TINY, device="cpu", tokens=[64, 128], kinds="-", prefix_tokens=8, query_tokens=8,
                      scoring=False, head=True, timer_kw=QUICK)
    assert t.gather is None and t.head is not None
    assert t.skipped[0] == {"what": "gather", "tokens": 64, "reason": "error: RuntimeError: Triton compilation failed"}


def test_mamba_points_beyond_mamba_ssm_int32_indexing_are_known_in_advance():
    from autoprune.profiler.layer_bench import int32_limit_tokens
    from autoprune.cost.shapes import NEMOTRON_H_8B

    limit = int32_limit_tokens(NEMOTRON_H_8B, "mamba")
    assert 65_536 < limit < 131_072  # 131k tokens crashed an H200; 64k ran
    assert int32_limit_tokens(NEMOTRON_H_8B, "mlp") is None


def test_progress_runs_from_zero_to_the_total_weighed_by_tokens_and_checkpoints_grow_partial_tables():
    seen, tables = [], []
    final = profile_shape(TINY, device="cpu", tokens=[64, 128], prefix_tokens=8, query_tokens=8, timer_kw=QUICK,
                          kinds="M*", scoring=False, gather=False, head=True,
                          progress=lambda done, total, label: seen.append((done, total, label)),
                          checkpoint=tables.append)
    totals = {t for _, t, _ in seen}
    assert totals == {3 * (64 + 128)}  # two kinds and the head, each at 64 and 128 tokens
    assert seen[0][:2] == (0, 3 * 192) and seen[-1][0] == 3 * 192
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert seen[1] == (64, 3 * 192, "mamba n=64")
    assert all(t.partial for t in tables) and not final.partial
    points = [sum(len(s) for s in t.layers.values()) for t in tables]
    assert points == [1, 2, 3, 4, 4, 4]  # M at 64, 128; * at 64, 128; then the head's two points
    assert tables[-1].head is not None and tables[-1].head.tokens == (64, 128)


def test_skipped_points_count_as_done_for_the_progress():
    seen = []
    profile_shape(TINY, device="cpu", tokens=[64, 128, 256], prefix_tokens=8, query_tokens=8, timer_kw=QUICK,
                  kinds="M", scoring=False, gather=False, head=False, time_budget_s=0.0,
                  progress=lambda done, total, label: seen.append((done, total, label)))
    assert seen[-1] == (448, 448, "mamba skipped")
