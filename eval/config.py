"""The evaluation config: one typed dataclass whose fields are the keys of configs/eval.yaml, one to one.

`EvalConfig(**keys)` checks every value in `__post_init__` and raises ValueError naming the offending key
(`config key 'n_envs': must be >= 1, got 0`) before any episode runs. The `sampler` group takes exactly the
knobs of `parapolicy.sampler_config.SamplerConfig` (`SAMPLER_KNOBS`, derived from its fields); `samplers` lists
names or dicts of those knobs and resolves to `EvalConfig.sampler_configs` ({label: SamplerConfig}).
Nothing here imports torch unless a CUDA device is named.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from parapolicy.sampler_config import SAMPLER_KNOBS, SamplerConfig

NOISE_MODES = {"chunk": "fresh noise per chunk", "episode": "one noise per episode",
               "relay": "the previous chunk's noise moved by the executed actions, fresh for new positions"}
FAST_DENOISER = (False, True, "auto", "eager", "fp32", "bf16")


def key_error(key: str, msg: str) -> ValueError:
    return ValueError(f"config key '{key}': {msg}")


def _check_int(key: str, v, lo: int | None = None, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise key_error(key, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise key_error(key, f"must be >= {lo}, got {v}")


def _check_number(key: str, v, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (v > 0 if positive else v >= 0):
        raise key_error(key, f"must be a number {'>' if positive else '>='} 0, got {v!r}")


def sampler_configs(base: dict, entries) -> dict[str, SamplerConfig]:
    """{label: SamplerConfig} from `samplers` (names, or dicts of SamplerConfig fields) over the shared knobs in
    `base` (the `sampler` group). Labels are the names, with the knobs that differ appended when a name repeats."""
    base = dict(base or {})
    unknown = sorted(set(base) - set(SAMPLER_KNOBS))
    if unknown:
        raise key_error(f"sampler.{unknown[0]}", f"unknown knob; the sampler group takes {', '.join(SAMPLER_KNOBS)}")
    if not isinstance(entries, list | tuple) or not entries:
        raise key_error("samplers", f"must be a non-empty list of sampler names or dicts, got {entries!r}")
    out = {}
    for i, entry in enumerate(entries):
        key = f"samplers[{i}]"
        if isinstance(entry, str):
            spec, extra = dict(base, name=entry), {}
        elif isinstance(entry, dict):
            if "name" not in entry:
                raise key_error(key, f"a sampler dict needs 'name', got {entry!r}")
            bad = sorted(set(entry) - set(SAMPLER_KNOBS) - {"name", "label"})
            if bad:
                raise key_error(f"{key}.{bad[0]}", f"unknown knob; choose from name, label, {', '.join(SAMPLER_KNOBS)}")
            extra = {k: v for k, v in entry.items() if k not in ("name", "label")}
            spec = dict(base, **extra, name=entry["name"])
        else:
            raise key_error(key, f"must be a sampler name or a dict, got {entry!r}")
        try:
            sc = SamplerConfig(**spec)
        except ValueError as e:
            raise key_error(key, str(e)) from None
        label = entry.get("label") if isinstance(entry, dict) and entry.get("label") else sc.name
        if isinstance(entry, dict) and not entry.get("label") and extra:
            label += "(" + ",".join(f"{k}={v}" for k, v in extra.items()) + ")"
        if label in out:
            raise key_error(key, f"sampler {label!r} appears twice; give one a 'label'")
        out[label] = sc
    return out


@dataclass
class EvalConfig:
    """The validated evaluation config; configs/eval.yaml documents each key."""

    policy: dict[str, Any]
    """the policy group: path (a checkpoint, LeRobot directory or built-in name)"""
    env: dict[str, Any]
    """the env group: id (a gymnasium id), control_hz, make kwargs"""
    sampler: dict[str, Any] = field(default_factory=dict)
    """knobs shared by every entry of `samplers`: a subset of SamplerConfig's fields"""
    samplers: list = field(default_factory=lambda: ["ddpm", "paraddpm"])
    n_episodes: int = 10
    seed_start: int = 100000
    n_envs: int = 10
    device: str = "cpu"
    max_steps: int = 300
    num_threads: int | None = 1
    fast_denoiser: bool | str = "auto"
    noise: str = "chunk"
    realtime: bool = False
    latency_scale: float = 1.0
    realtime_trigger: int = 0
    realtime_delay: int | None = None
    realtime_overlap: str = "replace"
    realtime_inpaint_steps: int | None = None
    warmup_calls: int = 2
    probe_calls: int = 20
    videos: int = 0
    progress: bool = True
    plots: bool = True
    resume: bool = True
    wandb: dict[str, Any] = field(default_factory=lambda: {"mode": "offline"})
    sampler_configs: dict[str, SamplerConfig] = field(init=False, repr=False, compare=False)
    """{label: SamplerConfig} resolved from `sampler` and `samplers` (not a config key)"""

    @classmethod
    def keys(cls) -> set[str]:
        """The config keys (the Hydra keys of configs/eval.yaml)."""
        return {f.name for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def from_dict(cls, raw: dict) -> EvalConfig:
        """From a composed config (a plain dict; a `hydra` entry is ignored); unknown keys are named."""
        names = cls.keys()
        unknown = sorted(set(raw) - names - {"hydra"})
        if unknown:
            raise key_error(unknown[0], f"unknown key; known keys: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in raw.items() if k in names})

    def __post_init__(self):
        for key, lo in (("n_episodes", 1), ("n_envs", 1), ("max_steps", 1), ("seed_start", 0),
                        ("warmup_calls", 0), ("probe_calls", 0), ("videos", 0), ("realtime_trigger", 0)):
            _check_int(key, getattr(self, key), lo)
        _check_int("num_threads", self.num_threads, 1, allow_none=True)
        _check_number("latency_scale", self.latency_scale)
        if self.noise not in NOISE_MODES:
            raise key_error("noise", "must be " + ", ".join(f"'{k}' ({v})" for k, v in NOISE_MODES.items())
                       + f", got {self.noise!r}")
        for key in ("realtime_delay", "realtime_inpaint_steps"):
            _check_int(key, getattr(self, key), 0, allow_none=True)
        from parapolicy.runtime.chunks import OVERLAP_RULES
        if self.realtime_overlap not in OVERLAP_RULES:
            raise key_error("realtime_overlap", f"must be one of {', '.join(OVERLAP_RULES)}, "
                                           f"got {self.realtime_overlap!r}")
        for key in ("realtime", "progress", "plots", "resume"):
            if not isinstance(getattr(self, key), bool):
                raise key_error(key, f"must be true or false, got {getattr(self, key)!r}")
        if self.fast_denoiser not in FAST_DENOISER or isinstance(self.fast_denoiser, int) and \
                not isinstance(self.fast_denoiser, bool):
            raise key_error("fast_denoiser", f"must be auto, bf16, fp32, eager, false (= eager) or true (= fp32), "
                                        f"got {self.fast_denoiser!r}")
        if not isinstance(self.policy, dict) or not self.policy.get("path"):
            raise key_error("policy.path", "a checkpoint path or built-in name is required")
        if not isinstance(self.env, dict) or not self.env.get("id"):
            raise key_error("env.id", "a gymnasium env id is required")
        _check_number("env.control_hz", self.env.get("control_hz", 10), positive=True)
        self._check_device()
        self.wandb = dict(self.wandb or {})
        from eval.wandb_log import MODES
        if self.wandb.get("mode") not in MODES:
            raise key_error("wandb.mode", f"must be one of {', '.join(MODES)} (set explicitly), "
                                     f"got {self.wandb.get('mode')!r}")
        self.sampler_configs = sampler_configs(self.sampler, self.samplers)
        if self.realtime and self.noise == "relay":
            raise key_error("noise", "'relay' is for lock-step evaluation (realtime=false)")
        if self.realtime and self.realtime_delay is None and self.n_envs != 1:
            raise key_error("n_envs", "realtime=true with measured latency simulates one robot whose latency is "
                                 "measured per call: set n_envs=1 (or a fixed realtime_delay, which batches envs)")

    def _check_device(self) -> None:
        problem = device_problem(self.device)
        if problem:
            raise key_error("device", problem)


def device_problem(d, kinds: tuple[str, ...] = ("cpu", "cuda", "mps")) -> str | None:
    """Why `d` cannot run here (None when it can): a device string of one of `kinds` ("cuda" with CUDA
    present). The eval config and the benchmarks (which time cpu and cuda only) share it."""
    import torch

    try:
        kind = torch.device(d).type if isinstance(d, str) else None
    except (RuntimeError, ValueError):
        kind = None
    if kind not in kinds:
        return f"{d!r} is not a torch device this can run on: must be one of {', '.join(kinds)} (cuda[:i])"
    if kind == "cuda" and not torch.cuda.is_available():
        return f"{d} requested but torch sees no CUDA device (torch.cuda.is_available() is False)"
    return None


def validate(raw: dict) -> tuple[EvalConfig, dict[str, SamplerConfig]]:
    """A composed config -> (EvalConfig, {label: SamplerConfig}); raises ValueError naming the offending key."""
    ec = EvalConfig.from_dict(raw)
    return ec, ec.sampler_configs
