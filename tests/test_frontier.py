"""The speed/reward frontier (eval.frontier): entry lists, a tiny end-to-end run whose table matches the per-group
eval.run results, resume (nothing re-run; added entries run alone), Ctrl-C, bad configs, wandb, the Hydra entry.
A tiny random policy (plumbing, not score) in Push-T, 10 env steps."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval import frontier
from eval.outputs import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 10


def _save_tiny(path: Path, num_inference_steps: int | None = None, seed: int = 0) -> str:
    from parapolicy.checkpoint import save_policy_dir
    from parapolicy.model import ConditionalUnet1D
    from parapolicy.normalizer import LinearNormalizer
    from parapolicy.train import TrainConfig, policy_config

    cfg = policy_config(TrainConfig(down_dims=(8, 16), n_groups=4, diffusion_step_embed_dim=16,
                                    num_train_timesteps=10), obs_dim=20, action_dim=2)
    if num_inference_steps is not None:  # a "student": the same network sampled on its own shorter grid
        cfg["num_inference_steps"] = num_inference_steps
        cfg["default_sampler"] = "ddim"
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(0)
    norm = LinearNormalizer().fit({"obs": torch.rand(64, 20, generator=g) * 512,
                                   "action": 100 + torch.rand(64, 2, generator=g) * 300})
    save_policy_dir(path, cfg, ConditionalUnet1D(**cfg["model"]).state_dict(), norm.state_dict())
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A teacher (10 DDPM steps) and a distill-like out dir with one student (round 1, 5 DDIM steps), whose
    students.json names its policy by a path relative to another working directory (as parapolicy.distill
    writes it)."""
    root = tmp_path_factory.mktemp("frontier")
    teacher = _save_tiny(root / "teacher")
    distill = root / "distill"
    _save_tiny(distill / "round1" / "policy", num_inference_steps=5, seed=1)
    (distill / "students.json").write_text(json.dumps([{"steps": 5, "round": 1,
                                                        "policy": "runs/distill/round1/policy"}]))
    return {"teacher": teacher, "distill": str(distill)}


def raw_cfg(teacher: str, **frontier_kw) -> dict:
    fr = {"steps": [2], "few_step": ["ddim", "paraddim"], "paraddpm": True, "warm_start": False,
          "students": "none", "student_samplers": ["ddim"], "plan": False}
    fr.update(frontier_kw)
    return {"policy": {"path": teacher}, "env": {"id": "parapolicy/PushT-v0", "obs_type": "keypoints",
                                                 "control_hz": 10},
            "sampler": {"num_inference_steps": None, "window": 4, "tol": 0.1, "max_iters": None, "accel": None,
                        "warm_start": False},
            "samplers": None, "noise": None, "n_episodes": 2, "n_envs": 2, "max_steps": MAX_STEPS,
            "num_threads": 1, "progress": False, "plots": False, "probe_calls": 2, "warmup_calls": 1,
            "wandb": {"mode": "disabled"}, "frontier": fr}


def _lines(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


# ---------------------------------------------------------------------------------------------- entries
def test_entries_cover_families_steps_warm_start_and_students():
    fr = frontier.check_frontier({"frontier": {"steps": [5, 10, 20, 10], "warm_start": True,
                                               "student_samplers": ["ddim", "paraddim"]}})
    assert fr["steps"] == [5, 10, 20] and fr["few_step"] == list(frontier.FEW_STEP)
    students = [{"steps": 50, "round": 1, "policy": "/s/r1"}, {"steps": 12, "round": 3, "policy": "/s/r3"}]
    entries = frontier.build_entries(fr, "pusht_keypoints", 100, students)
    labels = [e.label for e in entries]
    want_few = [f"{n}-{k}" for n in ("ddim", "paraddim", "dpmsolver", "paradpmsolver") for k in (5, 10, 20)]
    assert labels == (["ddpm-100", "paraddpm-100"] + want_few
                      + ["ddpm-100 (episode noise)", "paraddpm-100 (episode noise)",
                         "paraddpm-100-warm (episode noise)",
                         "student r1 ddim-50", "student r1 paraddim-50", "student r3 ddim-12",
                         "student r3 paraddim-12"])
    by = {e.label: e for e in entries}
    assert by["paradpmsolver-10"].sampler == {"name": "paradpmsolver", "num_inference_steps": 10,
                                              "label": "paradpmsolver-10"}
    assert by["paradpmsolver-10"].family == "picard" and by["dpmsolver-10"].family == "sequential"
    assert by["dpmsolver-10"].steps == 10 and by["dpmsolver-10"].reference == "ddpm-100"
    assert by["ddpm-100"].reference is None and by["ddpm-100"].sampler == {"name": "ddpm", "label": "ddpm-100"}
    warm = by["paraddpm-100-warm (episode noise)"]
    assert warm.noise == "episode" and warm.sampler["warm_start"] is True
    assert warm.reference == "ddpm-100 (episode noise)" and by["ddpm-100 (episode noise)"].reference is None
    st = by["student r3 ddim-12"]
    assert (st.family, st.policy, st.steps, st.noise, st.reference) == ("student", "/s/r3", 12, "chunk", "ddpm-100")
    assert "num_inference_steps" not in st.sampler  # the student's own grid
    gs = frontier.groups(entries)
    assert list(gs) == ["teacher", "teacher_episode_noise", "student_r1_50", "student_r3_12"]
    assert len(gs["teacher"]) == 14 and len(gs["teacher_episode_noise"]) == 3
    cfg = frontier.group_config({"n_episodes": 50, "fast_denoiser": "bf16", "policy": {"path": "x"},
                                 "frontier": {}, "wandb": {"mode": "offline"}}, gs["student_r3_12"])
    assert cfg["policy"]["path"] == "/s/r3" and cfg["noise"] == "chunk" and cfg["fast_denoiser"] == "bf16"
    assert cfg["samplers"] == [{"name": "ddim", "label": "ddim-12"}, {"name": "paraddim", "label": "paraddim-12"}]
    assert "frontier" not in cfg and cfg["wandb"] == {"mode": "disabled"}
    # without paraddpm, few-step samplers or warm start: DDPM alone remains (it is every pair's reference)
    bare = frontier.check_frontier({"frontier": {"few_step": [], "paraddpm": False, "warm_start": False}})
    assert [e.label for e in frontier.build_entries(bare, "t", 100, [])] == ["ddpm-100"]


def test_students_from_a_distill_dir_auto_and_none(tiny, tmp_path):
    students, note = frontier.find_students(tiny["distill"], cwd=tmp_path)
    assert students == [{"steps": 5, "round": 1,
                         "policy": str((Path(tiny["distill"]) / "round1" / "policy").resolve())}]
    assert "1 from" in note
    same, _ = frontier.find_students(str(Path(tiny["distill"]) / "students.json"), cwd=tmp_path)
    assert same == students
    assert frontier.find_students(None) == ([], "students: none (frontier.students=none)")
    none, note = frontier.find_students("auto", cwd=tmp_path)
    assert none == [] and "runs/distill_long/students.json" in note and "none found" in note
    (tmp_path / "runs").mkdir()
    os.symlink(tiny["distill"], tmp_path / "runs" / "distill")
    found, note = frontier.find_students("auto", cwd=tmp_path)
    assert [s["steps"] for s in found] == [5] and "runs/distill" in note
    with pytest.raises(ValueError, match="frontier.students.*no students file"):
        frontier.find_students(str(tmp_path / "nowhere"), cwd=tmp_path)


# -------------------------------------------------------------------------------------------- end to end
def test_frontier_runs_resumes_and_adds_entries(tiny, tmp_path, monkeypatch):
    import eval.run
    from eval.wandb_log import read_offline_run

    calls = []
    real = eval.run.evaluate
    monkeypatch.setattr(eval.run, "evaluate", lambda cfg, out, command=None: calls.append(Path(out).name)
                        or real(cfg, out, command=command))
    out = tmp_path / "fr"
    # 1. the teacher's entries, wandb disabled
    res = frontier.run_frontier(raw_cfg(tiny["teacher"]), out, command="python -m eval.frontier test")
    assert calls == ["teacher"] and res["wandb"]["status"] == "disabled" and not (out / "wandb").exists()
    assert [r["label"] for r in res["rows"]] == ["ddpm-10", "paraddpm-10", "ddim-2", "paraddim-2"]
    n_teacher = len(_lines(out / "teacher" / "episodes.jsonl"))
    assert n_teacher == 4 * 2
    # 2. the same command again: nothing runs, the files are rewritten from disk with the same numbers
    res2 = frontier.run_frontier(raw_cfg(tiny["teacher"]), out, command="python -m eval.frontier test")
    assert calls == ["teacher"] and res2["ran"] == {"teacher": "done earlier"}
    assert len(_lines(out / "teacher" / "episodes.jsonl")) == n_teacher
    assert [r["mean_score"] for r in res2["rows"]] == [r["mean_score"] for r in res["rows"]]
    # 3. add k=5, the warm-start group and a student: only the new entries' episodes run; wandb offline
    raw = raw_cfg(tiny["teacher"], steps=[2, 5], warm_start=True, students=tiny["distill"],
                  student_samplers=["ddim", "paraddim"])
    raw["wandb"] = {"mode": "offline", "project": "t"}
    res3 = frontier.run_frontier(raw, out, command="python -m eval.frontier test")
    assert calls == ["teacher", "teacher", "teacher_episode_noise", "student_r1_5"]
    new = _lines(out / "teacher" / "episodes.jsonl")[n_teacher:]
    assert sorted({r["sampler"] for r in new}) == ["ddim-5", "paraddim-5"] and len(new) == 4
    labels = ["ddpm-10", "paraddpm-10", "ddim-2", "ddim-5", "paraddim-2", "paraddim-5", "ddpm-10 (episode noise)",
              "paraddpm-10 (episode noise)", "paraddpm-10-warm (episode noise)", "student r1 ddim-5",
              "student r1 paraddim-5"]
    rows = {r["label"]: r for r in res3["rows"]}
    assert list(rows) == labels and all(r["status"] == "done" for r in rows.values())

    # the rows are the groups' eval.run results
    entries = {e.label: e for e in frontier.prepare(raw)[1]}
    for label, r in rows.items():
        e = entries[label]
        g = json.loads((out / e.group / "results.json").read_text())
        m = g["samplers"][e.sampler["label"]]
        assert r["n_episodes"] == m["n_episodes"] == 2
        assert (r["mean_score"], r["pc_success"]) == (m["mean_score"], m["pc_success"])
        assert r["mean_score_ci95"] == m["mean_score_ci95"]
        assert (r["rounds_mean"], r["nfe_mean"]) == (m["rounds_per_call"]["mean"], m["nfe_per_call"]["mean"])
        if e.sampler.get("warm_start"):  # the probe runs Picard cold: not the warm start's latency
            assert r["latency_p50_ms"] is None and r["latency_cold_probe_p50_ms"] == m["latency_ms"]["p50"]
        else:
            assert r["latency_p50_ms"] == m["latency_ms"]["p50"] > 0
            assert r["latency_p95_ms"] == m["latency_ms"]["p95"]
        if r["sampler"] in ("ddpm", "ddim", "dpmsolver"):
            assert r["rounds_mean"] == r["nfe_mean"] == r["steps"]
        assert e.noise == json.loads((out / e.group / "results.json").read_text())["config"]["noise"]
    assert rows["student r1 ddim-5"]["steps"] == 5 and rows["ddim-5"]["steps"] == 5 and rows["ddpm-10"]["steps"] == 10
    assert rows["paraddim-2"]["window"] == 4 and rows["ddim-2"]["window"] is None
    # paired differences: the teacher's equal eval.run's own (same reference, DDPM first in its group) ...
    teacher = json.loads((out / "teacher" / "results.json").read_text())
    assert rows["ddpm-10"]["d_score"] is None and rows["ddpm-10"]["reference"] is None
    for label in ("paraddpm-10", "ddim-2", "ddim-5", "paraddim-2", "paraddim-5"):
        p = teacher["paired"][label]["max_reward"]
        assert rows[label]["d_score"] == pytest.approx(p["mean"]) and rows[label]["n_pairs"] == p["n"] == 2
    ep = json.loads((out / "teacher_episode_noise" / "results.json").read_text())
    assert rows["paraddpm-10-warm (episode noise)"]["d_score"] == pytest.approx(
        ep["paired"]["paraddpm-10-warm"]["max_reward"]["mean"])
    assert rows["paraddpm-10-warm (episode noise)"]["reference"] == "ddpm-10 (episode noise)"
    # ... and a student's is against the teacher's DDPM, seed by seed, recomputed here from the episodes
    def per_seed(group, label):
        return {r["seed"]: r["max_reward"] for r in _lines(out / group / "episodes.jsonl")
                if r["sampler"] == label and r["status"] == "ok"}
    stud, ref = per_seed("student_r1_5", "ddim-5"), per_seed("teacher", "ddpm-10")
    want = sum(stud[s] - ref[s] for s in ref) / len(ref)
    assert rows["student r1 ddim-5"]["d_score"] == pytest.approx(want)
    assert rows["student r1 ddim-5"]["mean_score"] == pytest.approx(sum(stud.values()) / 2)

    # the files
    on_disk = json.loads((out / "frontier.json").read_text())
    assert [r["label"] for r in on_disk["rows"]] == labels and on_disk["command"] == "python -m eval.frontier test"
    got = list(csv.DictReader(io.StringIO((out / "frontier.csv").read_text())))
    assert [r["label"] for r in got] == labels
    for g, r in zip(got, res3["rows"]):
        assert float(g["mean_score"]) == pytest.approx(r["mean_score"])
        assert float(g["nfe_mean"]) == pytest.approx(r["nfe_mean"])
    md = (out / "frontier.md").read_text()
    for label in labels:
        assert f"| {label} |" in md
    assert f"| ddim-5 | sequential | teacher | ddim | 5 | chunk | 2 | {rows['ddim-5']['mean_score']:.3f}" in md
    assert "n/a (probe is cold)" in md and "python -m eval.frontier test" in md and "not run yet" not in md
    assert f"torch {torch.__version__}" in md and "load average" in md
    from PIL import Image

    with Image.open(out / "frontier.png") as im:
        assert im.size == (13 * 110, 5 * 110)
    assert res3["wandb"]["status"] == "ok"
    logged = read_offline_run(res3["wandb"]["dir"], wait_s=30)
    assert logged["summary"]["paraddim-5/mean_score"] == pytest.approx(rows["paraddim-5"]["mean_score"])
    assert logged["summary"]["student r1 ddim-5/d_score"] == pytest.approx(rows["student r1 ddim-5"]["d_score"])
    assert "frontier/_type" in logged["history_keys"]  # the table
    assert any(k.startswith("plots/frontier/") for k in logged["history_keys"]), logged["history_keys"]


def test_interrupted_frontier_keeps_finished_groups(tiny, tmp_path, monkeypatch):
    import eval.run

    calls = []
    real = eval.run.evaluate

    def flaky(cfg, out, command=None):
        calls.append(Path(out).name)
        if Path(out).name == "teacher_episode_noise" and calls.count("teacher_episode_noise") == 1:
            raise KeyboardInterrupt
        return real(cfg, out, command=command)

    monkeypatch.setattr(eval.run, "evaluate", flaky)
    raw = raw_cfg(tiny["teacher"], few_step=[], paraddpm=False, warm_start=True)
    raw["n_episodes"], raw["probe_calls"] = 1, 1
    out = tmp_path / "fr"
    with pytest.raises(KeyboardInterrupt):
        frontier.run_frontier(raw, out)
    on_disk = json.loads((out / "frontier.json").read_text())
    assert on_disk["interrupted"] is True
    assert [(r["label"], r["status"]) for r in on_disk["rows"]] == [
        ("ddpm-10", "done"), ("ddpm-10 (episode noise)", "missing"), ("paraddpm-10 (episode noise)", "missing"),
        ("paraddpm-10-warm (episode noise)", "missing")]
    assert "not run yet" in (out / "frontier.md").read_text()
    res = frontier.run_frontier(raw, out)
    assert calls == ["teacher", "teacher_episode_noise", "teacher_episode_noise"]
    assert res["ran"] == {"teacher": "done earlier", "teacher_episode_noise": "ran"}
    assert all(r["status"] == "done" for r in res["rows"]) and res["interrupted"] is False


# ------------------------------------------------------------------------------------------- bad config
@pytest.mark.parametrize("change,key", [
    ({"frontier": {"few_step": ["ddim", "fastest"]}}, "frontier.few_step[1]"),
    ({"frontier": {"few_step": ["ddpm"]}}, "frontier.few_step[0]"),
    ({"frontier": {"steps": [2, 0]}}, "frontier.steps[1]"),
    ({"frontier": {"steps": []}}, "frontier.steps"),
    ({"frontier": {"steps": [50]}}, "frontier.steps[0]"),  # the tiny teacher has 10 timesteps
    ({"frontier": {"student_samplers": ["dpmsolver"]}}, "frontier.student_samplers[0]"),
    ({"frontier": {"students": "/nonexistent/distill"}}, "frontier.students"),
    ({"frontier": {"warm_start": "yes"}}, "frontier.warm_start"),
    ({"frontier": {"stpes": [5]}}, "frontier.stpes"),
    ({"samplers": ["ddpm"]}, "samplers"),
    ({"noise": "episode"}, "noise"),
    ({"sampler": {"num_inference_steps": 5}}, "sampler.num_inference_steps"),
    ({"sampler": {"window": 0}}, "samplers[0]"),
    ({"n_envs": 0}, "n_envs"),
    ({"fast_denoiser": "yes"}, "fast_denoiser"),
    ({"policy": {"path": "/nonexistent/ckpt"}}, "policy.path"),
])
def test_bad_config_fails_before_any_episode(tiny, tmp_path, change, key):
    raw = raw_cfg(tiny["teacher"])
    for k, v in change.items():
        raw[k] = {**raw[k], **v} if isinstance(raw.get(k), dict) and k != "policy" else v
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        frontier.run_frontier(raw, tmp_path / "fr")
    assert not (tmp_path / "fr").exists()


def test_student_whose_step_count_disagrees_is_refused(tiny, tmp_path):
    d = tmp_path / "distill"
    d.mkdir()
    (d / "students.json").write_text(json.dumps([{"steps": 3, "round": 1,
                                                  "policy": str(Path(tiny["distill"]) / "round1" / "policy")}]))
    with pytest.raises(ValueError, match="frontier.students.*samples 5 steps"):
        frontier.run_frontier(raw_cfg(tiny["teacher"], students=str(d)), tmp_path / "fr")


# ------------------------------------------------------------------------------------------------ hydra
def test_config_inherits_eval_defaults():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        ev = compose("eval")
        fr = compose("frontier", return_hydra_config=True)
        fr5 = compose("frontier", overrides=["frontier.steps=[5]", "fast_denoiser=bf16"])
    assert fr.fast_denoiser == ev.fast_denoiser and fr.n_envs == ev.n_envs == 10  # taken from eval.yaml
    assert fr.n_episodes == 50 and fr.samplers is None and fr.noise is None
    assert fr.hydra.run.dir.startswith("runs/frontier/") and fr.wandb.mode == "offline"
    node = OmegaConf.to_container(fr.frontier)
    assert set(node) == set(frontier.FRONTIER_KEYS)
    assert frontier.check_frontier({"frontier": node}) == {
        "steps": [5, 10, 20], "few_step": ["ddim", "paraddim", "dpmsolver", "paradpmsolver"], "paraddpm": True,
        "warm_start": True, "students": "auto", "student_samplers": ["ddim"], "consistency": "auto",
        "consistency_steps": [1, 2, 3, 4], "plan": False}
    assert list(fr5.frontier.steps) == [5] and fr5.fast_denoiser == "bf16"


def test_cli_plan_lists_entries_and_runs_nothing(tiny, tmp_path):
    out = tmp_path / "plan"
    env = dict(os.environ, HYDRA_FULL_ERROR="1", WANDB_SILENT="true")
    p = subprocess.run([sys.executable, "-m", "eval.frontier", f"policy.path={tiny['teacher']}",
                        "frontier.steps=[2,5]", "frontier.plan=true", f"frontier.students={tiny['distill']}",
                        f"hydra.run.dir={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    for label in ("ddpm-10", "paradpmsolver-5", "paraddpm-10-warm (episode noise)", "student r1 ddim-5"):
        assert f"| {label} |" in p.stdout
    assert "14 entries x 50 episodes" in p.stdout and "students: 1 from" in p.stderr
    assert not list(out.rglob("episodes.jsonl")) and not (out / "frontier.json").exists()


def test_pareto_front_keeps_only_unbeaten_points():
    from eval.frontier_report import pareto_front

    pts = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (0.5, 0.4), (2.0, 0.9), (2.5, 0.95)]
    # (3.0, 0.8) is beaten by (2.0, 0.9); ties are kept; sorted by cost
    assert pareto_front(pts) == [3, 0, 1, 4, 5]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]
