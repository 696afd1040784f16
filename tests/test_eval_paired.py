"""eval.paired: by-seed pairing across eval.run directories and slim files."""
import json

import pytest

from eval.paired import by_label, main, parse_rename, parse_seeds, table, write_slim


def _write(path, recs):
    path.mkdir(parents=True, exist_ok=True)
    (path / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def _rec(sampler, seed, r, status="ok"):
    return {"sampler": sampler, "seed": seed, "status": status, "max_reward": r, "success": r > 0.95,
            "rewards": [0.0, r]}


def test_pairs_by_seed_across_runs_and_only_shared_ok_seeds(tmp_path):
    _write(tmp_path / "a", [_rec("ddpm", s, 0.5 + 0.1 * (s % 3)) for s in range(10)])
    # b: seed 9 missing, seed 8 failed, rewards = ddpm's + 0.2 on seeds 0..7
    _write(tmp_path / "b", [_rec("cm2", s, 0.7 + 0.1 * (s % 3)) for s in range(8)] + [_rec("cm2", 8, 0.0, "error")])
    e = by_label([tmp_path / "a", tmp_path / "b"])
    assert sorted(e["cm2"]) == list(range(8))
    md = table(e, "ddpm")
    row = [ln for ln in md.splitlines() if ln.startswith("| cm2 ")][0]
    assert "| 8 |" in row and "+0.200" in row
    # success is paired too, in percentage points: b succeeds on 2 of the 4 shared seeds, a on none
    _write(tmp_path / "c", [_rec("ddpm", s, 0.5) for s in range(4)])
    _write(tmp_path / "d", [_rec("cm3", s, 1.0 if s < 2 else 0.5) for s in range(4)])
    row = [ln for ln in table(by_label([tmp_path / "c", tmp_path / "d"]), "ddpm").splitlines()
           if ln.startswith("| cm3 ")][0]
    assert "| 50.0 |" in row and "| +50.0 [" in row
    restricted = by_label([tmp_path / "a", tmp_path / "b"], parse_seeds("0:4"))
    assert sorted(restricted["ddpm"]) == [0, 1, 2, 3]


def test_slim_keeps_what_pairing_needs_and_pairs_the_same(tmp_path):
    _write(tmp_path / "a", [_rec("ddpm", s, 0.1 * s) for s in range(5)])
    n = write_slim(tmp_path / "a", tmp_path / "slim" / "a.jsonl")
    assert n == 5
    rec = json.loads((tmp_path / "slim" / "a.jsonl").read_text().splitlines()[0])
    assert set(rec) == {"sampler", "seed", "status", "max_reward", "success"}
    # a renamed slim file pairs with the run it came from (same label would collide)
    assert main([str(tmp_path / "a"), "--slim", str(tmp_path / "b.jsonl"), "--rename", "ddpm=ddpm_b"]) == 0
    both = by_label([tmp_path / "a", tmp_path / "b.jsonl"])
    assert sorted(both) == ["ddpm", "ddpm_b"] and both["ddpm_b"][3]["max_reward"] == both["ddpm"][3]["max_reward"]
    assert by_label([tmp_path / "slim" / "a.jsonl"]) == {
        "ddpm": {s: {k: v for k, v in _rec("ddpm", s, 0.1 * s).items() if k != "rewards"} for s in range(5)}}


def test_bad_inputs_are_named(tmp_path, capsys):
    _write(tmp_path / "a", [_rec("ddpm", 0, 0.5)])
    _write(tmp_path / "b", [_rec("ddpm", 0, 0.6)])
    with pytest.raises(ValueError, match="'ddpm' is in both"):
        by_label([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="reference entry 'cm2' not found"):
        table(by_label([tmp_path / "a"]), "cm2")
    with pytest.raises(ValueError, match="OLD=NEW"):
        parse_rename(["ddpm"])
    with pytest.raises(ValueError, match="START:STOP"):
        parse_seeds("100000")
    (tmp_path / "c.jsonl").write_text('{"sampler": "x"}\nnot json\n')
    assert main([str(tmp_path / "c.jsonl")]) == 2
    assert "c.jsonl:2" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path / "a"), "--rename", "ddpm=x"]) == 2      # --rename without --slim
