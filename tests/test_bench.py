"""The benchmark commands run end to end on a tiny policy (their figures are measured, not checked here)."""

import json

import pytest


def test_bench_chunk_times_every_path_and_sampler_on_the_same_noise(tiny_policy_dir, tmp_path, capsys):
    from eval import bench_chunk

    out = tmp_path / "chunk.json"
    bench_chunk.main(["--policy", str(tiny_policy_dir), "--paths", "eager,fp32", "--samplers", "ddpm,paraddpm",
                      "--obs", "2", "--repeats", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    rows = {(r["path"], r["sampler"]): r for r in res["rows"]}
    assert list(rows) == [("eager", "ddpm"), ("eager", "paraddpm"), ("fp32", "ddpm"), ("fp32", "paraddpm")]
    assert rows[("eager", "ddpm")]["speedup"] == 1.0 and rows[("eager", "ddpm")]["max_action_diff_px"] == 0.0
    assert rows[("eager", "ddpm")]["rounds"] == rows[("eager", "ddpm")]["nfe"] == 20  # tiny policy: 20 steps
    assert rows[("fp32", "ddpm")]["max_action_diff_px"] < 0.05       # fast float32 ~ eager
    assert 1 <= rows[("eager", "paraddpm")]["rounds"] <= 20
    assert all(r["calls"] == 2 and r["cpu_ms_p50"] > 0 for r in rows.values())
    assert "| eager | paraddpm |" in capsys.readouterr().out


def test_bench_chunk_rejects_unknown_names():
    from eval import bench_chunk

    with pytest.raises(SystemExit):
        bench_chunk.parse_args(["--paths", "eager,turbo"])
    with pytest.raises(SystemExit):
        bench_chunk.parse_args(["--samplers", "ddpm,fastest"])
