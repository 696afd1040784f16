"""Optional wandb logging of an evaluation, and a reader for offline runs.

`log_results` creates one run per evaluation with the per-sampler summary (keys "<sampler>/<metric>"), an
episodes table, latency/rounds histograms and the PNG plots. The mode is always passed explicitly (default
"offline": with an API key set and no network, "online" blocks ~100 s before failing). Every wandb failure is
caught and returned as {"status": "failed", "error": ...}: the local results are already on disk by then.

wandb 0.31 ships no reader for offline `.wandb` files; `read_offline_run` reads the record log itself
(LevelDB log framing: 32 KiB blocks of records with a 7-byte header crc32/length/type, after wandb's 7-byte
file header ":W&B" + magic + version) and decodes the protobuf `Record`s with wandb's own message classes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MODES = ("offline", "online", "disabled")


def _flat_summary(results: dict) -> dict:
    out = {}
    for label, m in results["samplers"].items():
        for k, v in m.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    if isinstance(vv, int | float) or vv is None:
                        out[f"{label}/{k}_{kk}"] = vv
            elif isinstance(v, list):
                if len(v) == 2:
                    out[f"{label}/{k}_lo"], out[f"{label}/{k}_hi"] = v
            elif isinstance(v, int | float | str) or v is None:
                out[f"{label}/{k}"] = v
    for label, p in results.get("paired", {}).items():
        for metric, ci in p.items():
            for kk in ("mean", "lo", "hi", "n"):
                out[f"paired/{label}/{metric}_{kk}"] = ci.get(kk)
    return {k: v for k, v in out.items() if v is not None}


def log_results(results: dict, episodes: list[dict], latencies: dict, plots: list[str], wandb_cfg: dict,
                out_dir: str, tables: dict | None = None) -> dict:
    """Log an evaluation to wandb. wandb_cfg: {mode, project, entity, name, tags, group}; tables: more tables to
    log, {name: (columns, rows)}.
    -> {"status": "ok", "mode", "run_id", "dir", "summary": {...}} or {"status": "failed" | "disabled", ...}."""
    mode = wandb_cfg.get("mode", "offline")
    if mode == "disabled":
        return {"status": "disabled", "mode": mode}
    run = None
    try:
        import wandb

        run = wandb.init(mode=mode, project=wandb_cfg.get("project"), entity=wandb_cfg.get("entity"),
                         name=wandb_cfg.get("name"), group=wandb_cfg.get("group"),
                         tags=list(wandb_cfg.get("tags") or []), dir=out_dir, config=results["config"],
                         reinit="finish_previous", settings=wandb.Settings(console="off", silent=True))
        summary = _flat_summary(results)
        for k, v in summary.items():
            run.summary[k] = v
        cols = ["sampler", "seed", "status", "max_reward", "success", "steps", "n_calls", "mean_rounds",
                "mean_ms", "wall_s", "error"]
        table = wandb.Table(columns=cols)
        for e in episodes:
            calls = e.get("calls", [])
            table.add_data(e["sampler"], e["seed"], e["status"], e["max_reward"], e["success"], e["steps"],
                           len(calls), sum(c["rounds"] for c in calls) / max(1, len(calls)),
                           sum(c["ms"] for c in calls) / max(1, len(calls)), e.get("wall_s"), e.get("error"))
        log = {"episodes": table} if episodes else {}
        for label, xs in latencies.items():
            if xs:
                log[f"{label}/latency_ms_hist"] = wandb.Histogram(xs)
            rounds = [c["rounds"] for e in episodes if e["sampler"] == label for c in e.get("calls", [])]
            if rounds:
                log[f"{label}/rounds_hist"] = wandb.Histogram(rounds)
        for p in plots:
            log[f"plots/{Path(p).stem}"] = wandb.Image(p)
        for name, (columns, rows) in (tables or {}).items():
            log[name] = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        run.log(log)
        info = {"status": "ok", "mode": mode, "run_id": run.id, "dir": str(Path(run.dir).parent),
                "summary": {k: run.summary[k] for k in summary}}
        run.finish()
        return info
    except Exception as e:  # noqa: BLE001 - wandb must never cost the local results
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
        return {"status": "failed", "mode": mode, "error": f"{type(e).__name__}: {e}"}


# ---------------------------------------------------------------------------------------------- reader
_BLOCK = 32768
_HEADER = 7


def read_records(path: str | Path):
    """Yield the raw record payloads of a `.wandb` file (FULL, or FIRST + MIDDLE* + LAST reassembled)."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb run file (no ':W&B' header)")
    pos, buf = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def read_offline_run(run_dir: str | Path, wait_s: float = 0.0) -> dict:
    """Summary and config of an offline run directory (`.../wandb/offline-run-*`), read from its `.wandb` file.
    -> {"summary": {key: value}, "config": {key: value}, "history_keys": [...], "complete": bool}; nested
    summary keys joined with "/". wandb's service may still be writing the file when `run.finish()` returns:
    wait_s > 0 re-reads until the run's exit record is there (`complete`) or the time is up."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        out = _read_offline_run(run_dir)
        if out["complete"] or time.monotonic() >= deadline:
            return out
        time.sleep(0.1)


def _read_offline_run(run_dir: str | Path) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    summary, config, history_keys, complete = {}, {}, set(), False
    for raw in read_records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "summary":
            for u in rec.summary.update:
                key = u.key or "/".join(u.nested_key)
                summary[key] = json.loads(u.value_json)
        elif kind == "config":
            for u in rec.config.update:
                config[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "run":
            for u in rec.run.config.update:
                config[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "history":
            history_keys.update(item.key or "/".join(item.nested_key) for item in rec.history.item)
        elif kind == "exit":
            complete = True
    return {"summary": summary, "config": config, "history_keys": sorted(history_keys), "complete": complete}
