"""Per-dimension affine normalisation, state_dict-compatible with Diffusion Policy's `LinearNormalizer`.

State dict layout (one entry per key, e.g. "obs", "action"):

    params_dict.<key>.scale, params_dict.<key>.offset                   (D,)
    params_dict.<key>.input_stats.{min,max,mean,std}                   (D,)

normalize(x) = x * scale + offset; "limits" mode maps each dimension's [min, max] to [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn


def limits_params(x: torch.Tensor, output_min: float = -1.0, output_max: float = 1.0,
                  range_eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """Scale/offset mapping each last-dim column of x (N, ..., D) from [min, max] to [output_min, output_max].

    A column whose range is below `range_eps` is only shifted so that its value maps to the middle."""
    x = x.reshape(-1, x.shape[-1]).to(torch.float32)
    lo, hi = x.min(0).values, x.max(0).values
    rng = hi - lo
    flat = rng < range_eps
    rng = torch.where(flat, torch.full_like(rng, output_max - output_min), rng)
    scale = (output_max - output_min) / rng
    offset = output_min - scale * lo
    offset = torch.where(flat, (output_max + output_min) / 2 - lo, offset)
    stats = {"min": lo, "max": hi, "mean": x.mean(0), "std": x.std(0)}
    return {"scale": scale, "offset": offset, "input_stats": stats}


class LinearNormalizer(nn.Module):
    """Holds one affine map per key. `normalize({"obs": ...})` or `normalize(x, key="obs")`."""

    def __init__(self):
        super().__init__()
        self.params_dict = nn.ParameterDict()

    def set_params(self, key: str, scale, offset, input_stats: dict | None = None) -> None:
        scale = torch.as_tensor(scale, dtype=torch.float32)
        offset = torch.as_tensor(offset, dtype=torch.float32)
        if scale.shape != offset.shape:
            raise ValueError(f"normalizer '{key}': scale {tuple(scale.shape)} != offset {tuple(offset.shape)}")
        stats = input_stats or {}
        d = scale.shape
        group = nn.ParameterDict({
            "scale": nn.Parameter(scale.clone(), requires_grad=False),
            "offset": nn.Parameter(offset.clone(), requires_grad=False),
            "input_stats": nn.ParameterDict({
                k: nn.Parameter(torch.as_tensor(stats.get(k, torch.zeros(d)), dtype=torch.float32).clone(),
                                requires_grad=False) for k in ("min", "max", "mean", "std")}),
        })
        self.params_dict[key] = group

    def fit(self, data: dict[str, torch.Tensor], mode: str = "limits") -> LinearNormalizer:
        if mode != "limits":
            raise ValueError(f"normalizer mode '{mode}' is not supported (only 'limits')")
        for key, x in data.items():
            self.set_params(key, **limits_params(torch.as_tensor(x)))
        return self

    def load_flat_state(self, state: dict[str, torch.Tensor], prefix: str = "") -> LinearNormalizer:
        """Rebuild from state_dict entries `<prefix>params_dict.<key>.<field>` (keys found, not declared)."""
        fields: dict[str, dict] = {}
        head = prefix + "params_dict."
        for name, value in state.items():
            if not name.startswith(head):
                continue
            key, _, rest = name[len(head):].partition(".")
            fields.setdefault(key, {"input_stats": {}})
            if rest.startswith("input_stats."):
                fields[key]["input_stats"][rest.split(".", 1)[1]] = value
            else:
                fields[key][rest] = value
        for key, f in fields.items():
            if "scale" not in f or "offset" not in f:
                raise ValueError(f"normalizer '{key}' lacks scale/offset in the state dict")
            self.set_params(key, f["scale"], f["offset"], f["input_stats"])
        return self

    def keys(self) -> list[str]:
        return list(self.params_dict.keys())

    def _get(self, key: str):
        if key not in self.params_dict:
            raise KeyError(f"normalizer has no key '{key}' (has {self.keys()})")
        p = self.params_dict[key]
        return p["scale"], p["offset"]

    def normalize(self, x, key: str | None = None):
        if isinstance(x, dict):
            return {k: self.normalize(v, k) for k, v in x.items()}
        scale, offset = self._get(key)
        return x * scale.to(x) + offset.to(x)

    def unnormalize(self, x, key: str | None = None):
        if isinstance(x, dict):
            return {k: self.unnormalize(v, k) for k, v in x.items()}
        scale, offset = self._get(key)
        return (x - offset.to(x)) / scale.to(x)
