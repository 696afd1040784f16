"""The benchmark commands run end to end on a tiny policy (their figures are measured, not checked here)."""

import json

import pytest


def test_bench_chunk_times_every_path_and_sampler_on_the_same_noise(tiny_policy_dir, tmp_path, capsys):
    from eval import bench_chunk

    out = tmp_path / "chunk.json"
    sec = "paraddpm:w8/secant/zero/tol=0.03"
    bench_chunk.main(["--policy", str(tiny_policy_dir), "--paths", "eager,fp32", "--samplers", "ddpm,paraddpm," + sec,
                      "--obs", "2", "--repeats", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    rows = {(r["path"], r["sampler"]): r for r in res["rows"]}
    assert list(rows) == [("eager", "ddpm"), ("eager", "paraddpm"), ("eager", sec), ("fp32", "ddpm"),
                          ("fp32", "paraddpm"), ("fp32", sec)]
    assert rows[("eager", sec)]["nfe"] != rows[("eager", "paraddpm")]["nfe"]   # the variant really ran
    assert rows[("eager", "ddpm")]["speedup"] == 1.0 and rows[("eager", "ddpm")]["max_action_diff_px"] == 0.0
    assert rows[("eager", "ddpm")]["rounds"] == rows[("eager", "ddpm")]["nfe"] == 20  # tiny policy: 20 steps
    assert rows[("fp32", "ddpm")]["max_action_diff_px"] < 0.05       # fast float32 ~ eager
    assert 1 <= rows[("eager", "paraddpm")]["rounds"] <= 20
    assert all(r["calls"] == 2 and r["cpu_ms_p50"] > 0 for r in rows.values())
    assert all(r["speedup_clock"] == "cpu" for r in rows.values()) and res["device"]
    assert "| eager | paraddpm |" in capsys.readouterr().out


def test_bench_rounds_reports_rounds_nfe_and_error_per_variant(tiny_policy_dir, tmp_path, capsys):
    """Every variant is solved on the same windows and noise as sequential DDPM: tol 0 gives DDPM's actions,
    a looser tolerance fewer rounds, and each variant's own options reach the sampler."""
    from eval import bench_rounds

    out = tmp_path / "rounds.json"
    bench_rounds.main(["--policy", str(tiny_policy_dir), "--obs", "2", "--json", str(out),
                       "--variants", "w4/tol=0,w8,w8/secant/zero/tol=0.03/first=2"])
    res = json.loads(out.read_text())
    v = res["variants"]
    assert list(v) == ["w4/tol=0", "w8", "w8/secant/zero/tol=0.03/first=2"]
    assert v["w4/tol=0"]["max_err"] < 1e-3                  # exact: tol 0 is sequential DDPM
    assert v["w4/tol=0"]["rounds_mean"] >= 20 / 4           # a window of 4 accepts at most 4 steps a round
    assert v["w8"]["rounds_mean"] < v["w4/tol=0"]["rounds_mean"]
    assert v["w8/secant/zero/tol=0.03/first=2"]["nfe_mean"] != v["w8"]["nfe_mean"]
    assert res["device"] and res["clock"] == "CPU" and res["threads"] == 1
    assert "| w8 |" in capsys.readouterr().out


def test_benchmarks_compare_wall_clock_when_more_than_one_thread_runs(tiny_policy_dir, tmp_path):
    """Process CPU time sums every torch thread's work: with two threads the speed-ups must be wall-clock ratios."""
    import torch

    from eval import bench_chunk, bench_rounds

    threads = torch.get_num_threads()
    try:
        bench_chunk.main(["--policy", str(tiny_policy_dir), "--paths", "eager", "--samplers", "ddpm,paraddpm",
                          "--obs", "2", "--repeats", "1", "--threads", "2", "--json", str(tmp_path / "c.json")])
        bench_rounds.main(["--policy", str(tiny_policy_dir), "--obs", "2", "--variants", "w8", "--threads", "2",
                           "--json", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)
    ddpm, para = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert ddpm["speedup_clock"] == para["speedup_clock"] == "wall"
    assert para["speedup"] == pytest.approx(ddpm["wall_ms_p50"] / para["wall_ms_p50"])
    assert json.loads((tmp_path / "r.json").read_text())["clock"] == "wall"


def test_bench_chunk_unet_time_counts_every_denoiser_call(tiny_policy_dir, tmp_path, monkeypatch):
    """The UNet-only column adds up the time inside each denoiser call, and only there: with a clock that ticks
    once per reading, every call counts one tick, so a chunk's UNet time is its count of (batched) calls."""
    import itertools
    import time

    from eval import bench_chunk

    ticks = itertools.count()
    monkeypatch.setattr(time, "process_time", lambda: float(next(ticks)))
    out = tmp_path / "chunk.json"
    bench_chunk.main(["--policy", str(tiny_policy_dir), "--paths", "eager,fp32", "--samplers", "ddpm,paraddpm",
                      "--obs", "1", "--repeats", "1", "--json", str(out)])
    rows = {(r["path"], r["sampler"]): r for r in json.loads(out.read_text())["rows"]}
    for path in ("eager", "fp32"):
        ddpm, para = rows[(path, "ddpm")], rows[(path, "paraddpm")]
        assert ddpm["unet_ms_p50"] == 1e3 * 20                   # 20 steps, one call each
        assert para["unet_ms_p50"] == 1e3 * para["rounds"]       # one batched call per round
        assert para["unet_only_speedup"] == pytest.approx(20 / para["rounds"])


@pytest.mark.parametrize("bench", ["bench_chunk", "bench_rounds", "bench_denoiser"])
def test_benchmarks_refuse_a_device_they_cannot_run_on(bench, capsys):
    """A bad or absent device stops the benchmark before any work, with a message that names it."""
    import importlib

    import torch

    main = importlib.import_module(f"eval.{bench}").main
    with pytest.raises(SystemExit):
        main(["--device", "warp9"])
    assert "not a torch device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--device", "cuda"])
        assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_bench_chunk_rejects_unknown_names():
    from eval import bench_chunk

    with pytest.raises(SystemExit):
        bench_chunk.parse_args(["--paths", "eager,turbo"])
    with pytest.raises(SystemExit):
        bench_chunk.parse_args(["--samplers", "ddpm,fastest"])
    with pytest.raises(SystemExit):
        bench_chunk.parse_args(["--samplers", "ddpm,paraddpm:w8/newton"])


def test_lerobot_unet_config_is_lerobots_pusht_size():
    """The benchmark's LeRobot-size UNet: global cond 2 x (32 keypoints x 2 + 2 state), ~251.5M parameters
    (counted on the meta device: nothing is allocated)."""
    import torch

    from eval.bench_denoiser import MODELS
    from parapolicy.model import ConditionalUnet1D

    cfg = MODELS["lerobot"]
    assert cfg["global_cond_dim"] == 132 and cfg["down_dims"] == (512, 1024, 2048)
    assert cfg["diffusion_step_embed_dim"] == 128 and cfg["cond_predict_scale"]
    with torch.device("meta"):
        n = sum(p.numel() for p in ConditionalUnet1D(**cfg).parameters())
    assert 250e6 < n < 253e6


def test_bench_denoiser_prints_curves_and_picard_table(monkeypatch, tmp_path, capsys):
    """End to end on two tiny UNets (one with LeRobot's conditioning sizes): curves, the auto window and the
    predicted ParaDDPM speed-up per variant, and the side-by-side table; the Picard columns agree with the
    cost model evaluated on the printed curves."""
    import torch

    from eval import bench_denoiser
    from parapolicy.sampling.cost import CostModel, choose_window, predict

    tiny = dict(input_dim=2, global_cond_dim=40, down_dims=(8, 16), kernel_size=5,
                diffusion_step_embed_dim=16, n_groups=4, cond_predict_scale=True)
    monkeypatch.setitem(bench_denoiser.MODELS, "tinyA", tiny)
    monkeypatch.setitem(bench_denoiser.MODELS, "tinyB", dict(tiny, global_cond_dim=132, down_dims=(16, 32)))
    out = tmp_path / "den.json"
    bench_denoiser.main(["--models", "tinyA,tinyB", "--batches", "1,2,4", "--variants", "eager,fast32",
                         "--warmup", "0", "--repeats", "1", "--steps", "10", "--json", str(out)])
    text = capsys.readouterr().out
    assert "ParaDDPM ms" in text and "DDPM-10 ms" in text and "side by side" in text
    res = json.loads(out.read_text())
    for m in ("tinyA", "tinyB"):
        for variant in ("eager", "fast32"):
            row = res["models"][m]["picard"][variant]
            curve = {int(b): t for b, t in res["models"][m]["seconds"][variant].items()}
            cost = CostModel(curve)
            window, secs = choose_window(None, torch.zeros(1, 16, 2), None, 10, cost_model=cost)
            assert row["window"] == window and 1 <= window <= 10
            assert row["rounds"] == predict(cost, 10, window)[1]
            assert abs(row["speedup"] - 10 * curve[1] / secs) < 1e-9
            assert f"{m:>8}" in text


def test_bench_denoiser_rejects_bad_arguments():
    from eval import bench_denoiser

    with pytest.raises(SystemExit):
        bench_denoiser.parse_args(["--models", "shipped,huge"])
    with pytest.raises(SystemExit):
        bench_denoiser.parse_args(["--steps", "0"])


def test_variant_syntax_maps_to_sampler_keywords():
    from eval.variants import parse_variant

    assert parse_variant("w48/secant/zero/tol=0.03/atol=auto") == dict(
        window=48, update="secant", start="zero", tol=0.03, atol="auto")
    assert parse_variant("w64/secant/zero/first=16") == dict(window=64, update="secant", start="zero",
                                                             first_window=16)
    assert parse_variant("w16/window/taa/atol=1e-3") == dict(window=16, guess="window", accel="taa", atol=1e-3)
    with pytest.raises(ValueError, match="'first=x' in variant 'w16/first=x' needs a window size"):
        parse_variant("w16/first=x")
    with pytest.raises(ValueError, match="unknown option 'fast'"):
        parse_variant("w16/fast")
    with pytest.raises(ValueError, match="must start with w<window>"):
        parse_variant("16/secant")
