"""Image conditioning: camera windows + low-dim windows -> the UNet's global condition, once per chunk.

`config["vision"]` (written by the loaders, see docs/vision.md):

    style         "lerobot" | "dp" | "dp_hybrid" (whose rules of input checking and concatenation apply)
    encoder       "lerobot" | "dp_resnet" | "robomimic" (`parapolicy.vision.build_encoder`)
    image_keys    camera keys in the source's order; encoders.<i> belongs to image_keys[i] (one, encoders.0,
                  when shared)
    image_shapes  {key: [C, H, W]} as the policy receives them
    shared        one encoder for every camera
    resize, crop  [h, w] or None; imagenet_norm bool (after the crop, DP's MultiImageObsEncoder)
    center_crop   "round" (torchvision CenterCrop; default) or "floor" (DP's CropRandomizer at eval)
    num_kp, feature_dim, width, blocks, temperature   encoder sizes; norm "group" (default) or "batch"
    cond_order    the keys (cameras and low-dim keys) in the order their per-step features are concatenated

Tensors (LoadedCheckpoint.encoder_state): `encoders.<i>.<parameter>` and `norm_scale_<i>`, `norm_offset_<i>`
(C, 1, 1) or (1, 1, 1): the source's image normalisation x * scale + offset applied before resize/crop.

Per step the features of `cond_order` are concatenated, then the n_obs_steps steps are flattened:
cond (B, n_obs_steps * D), the layout of LeRobot's `_prepare_global_conditioning` and of DP's
`obs_encoder(x[:, :To].reshape(B * To, ...)).reshape(B, -1)`.
"""

from __future__ import annotations

import torch
from torch import nn

from parapolicy.vision import build_encoder, preprocess

STYLES = ("lerobot", "dp", "dp_hybrid")


def encoder_input_shape(vcfg: dict, key: str) -> tuple[int, int, int]:
    """(C, h, w) an encoder sees after resize and crop."""
    c, h, w = (int(s) for s in vcfg["image_shapes"][key])
    if vcfg.get("resize"):
        h, w = (int(s) for s in vcfg["resize"])
    if vcfg.get("crop"):
        h, w = (int(s) for s in vcfg["crop"])
    return c, h, w


def build_encoders(vcfg: dict) -> nn.ModuleList:
    keys = list(vcfg["image_keys"])
    n = 1 if vcfg.get("shared") else len(keys)
    kw = {k: vcfg[k] for k in ("num_kp", "feature_dim", "width", "temperature", "norm") if vcfg.get(k) is not None}
    if vcfg.get("blocks") is not None:
        kw["blocks"] = tuple(vcfg["blocks"])
    return nn.ModuleList([build_encoder(vcfg["encoder"], encoder_input_shape(vcfg, keys[i]), **kw)
                          for i in range(n)])


class ImageConditioner(nn.Module):
    """Encodes camera windows and concatenates them with normalised low-dim windows (see module docstring)."""

    def __init__(self, vcfg: dict):
        super().__init__()
        if vcfg.get("style") not in STYLES:
            raise ValueError(f"vision style must be one of {STYLES}, got {vcfg.get('style')!r}")
        self.vcfg = vcfg
        self.image_keys = list(vcfg["image_keys"])
        if not self.image_keys:
            raise ValueError("an image policy needs at least one camera key")
        self.image_shapes = {k: tuple(int(s) for s in vcfg["image_shapes"][k]) for k in self.image_keys}
        self.cond_order = list(vcfg["cond_order"])
        self.encoders = build_encoders(vcfg)
        for i, k in enumerate(self.image_keys):
            c = self.image_shapes[k][0]
            self.register_buffer(f"norm_scale_{i}", torch.ones(c, 1, 1))
            self.register_buffer(f"norm_offset_{i}", torch.zeros(c, 1, 1))
        self.feature_dim = int(self.encoders[0].feature_dim)

    def load_encoder_state(self, state: dict, where: str = "") -> None:
        """Strict load; scale/offset of shape (1,) or (C,) are reshaped to (C|1, 1, 1)."""
        state = dict(state)
        for name in list(state):
            if name.startswith("norm_"):
                v = state[name].to(torch.float32).reshape(-1, 1, 1)
                c = self.image_shapes[self.image_keys[int(name.rsplit("_", 1)[1])]][0]
                state[name] = v.expand(c, 1, 1).clone() if v.shape[0] == 1 else v
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{where}image encoder weights do not fit the encoder the config describes "
                             f"({self.vcfg['encoder']}): {str(e).splitlines()[0]} ...") from e
        bad = [k for k, v in self.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"{where}image encoder tensors hold NaN/inf: {bad[:5]}")

    # -------------------------------------------------------------------------------------------- checks
    def check_image(self, key: str, x, n_obs_steps: int) -> torch.Tensor:
        """obs[key] -> float32 (B, To, C, H, W) in [0, 1]; ValueError naming the key otherwise."""
        want = (n_obs_steps, *self.image_shapes[key])
        if not isinstance(x, torch.Tensor):
            import numpy as np

            x = torch.from_numpy(np.asarray(x))
        if x.dtype == torch.uint8:
            raise ValueError(f"obs['{key}'] is uint8 (0-255 pixels); this policy takes float images in [0, 1] "
                             f"of shape (B, {', '.join(map(str, want))}): convert with x.float() / 255")
        if not x.is_floating_point():
            raise ValueError(f"obs['{key}'] has dtype {x.dtype}; images must be float in [0, 1]")
        if x.ndim != 5 or tuple(x.shape[1:]) != want:
            hint = ""
            if x.ndim == 5 and x.shape[-1] == want[1] and tuple(x.shape[2:4]) == want[2:4]:
                hint = " (channels last? permute to (B, To, C, H, W))"
            raise ValueError(f"obs['{key}'] must have shape (B, {', '.join(map(str, want))}), got "
                             f"{tuple(x.shape)}{hint}")
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError(f"obs['{key}'] contains NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            why = " (0-255 pixels? divide by 255)" if hi > 1.5 else ""
            raise ValueError(f"obs['{key}'] values span [{lo:.3g}, {hi:.3g}]; images must lie in [0, 1]{why}")
        return x

    # ---------------------------------------------------------------------------------------- encoding
    def encode(self, images: dict[str, torch.Tensor], train: bool = False,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """{key: (B, To, C, H, W) checked} -> {key: (B, To, D)} features (normalise, resize, crop, encode)."""
        v = self.vcfg
        prepped = []
        for i, k in enumerate(self.image_keys):
            x = images[k]
            b, to = x.shape[:2]
            x = x.reshape(b * to, *x.shape[2:]) * getattr(self, f"norm_scale_{i}") + getattr(self, f"norm_offset_{i}")
            prepped.append(preprocess(x, v.get("resize"), v.get("crop"), bool(v.get("imagenet_norm")), train,
                                      generator, v.get("center_crop", "round")))
        b, to = images[self.image_keys[0]].shape[:2]
        if v.get("shared"):
            feats = self.encoders[0](torch.cat(prepped, 0)).reshape(len(prepped), b, to, -1)
            return {k: feats[i] for i, k in enumerate(self.image_keys)}
        return {k: self.encoders[i](prepped[i]).reshape(b, to, -1) for i, k in enumerate(self.image_keys)}

    def condition(self, obs: dict, policy, train: bool = False) -> torch.Tensor:
        """obs {camera: (B, To, C, H, W) float [0, 1], low-dim key: (B, To, d) env units} ->
        (B, To * D) normalised global condition. `policy` supplies n_obs_steps, obs_dims and the
        low-dim normaliser."""
        if not isinstance(obs, dict):
            raise ValueError(f"observations must be a dict with keys {self.cond_order}, got {type(obs).__name__}")
        missing = [k for k in self.cond_order if k not in obs]
        if missing:
            cams = [k for k in missing if k in self.image_keys]
            what = f"cameras {cams}" if cams else f"keys {missing}"
            raise ValueError(f"observation dict lacks {what}; this policy reads {self.cond_order} "
                             f"(got {sorted(obs)})")
        images = {k: self.check_image(k, obs[k], policy.n_obs_steps).to(policy.device) for k in self.image_keys}
        batch = {k: x.shape[0] for k, x in images.items()}
        parts = {}
        for k in self.cond_order:
            if k in images:
                continue
            x = torch.as_tensor(obs[k], dtype=torch.float32, device=policy.device)
            want = (policy.n_obs_steps, policy.obs_dims[k])
            if x.ndim != 3 or tuple(x.shape[1:]) != want:
                raise ValueError(f"obs['{k}'] must have shape (B, {want[0]}, {want[1]}), got {tuple(x.shape)}")
            if not torch.isfinite(x).all():
                raise ValueError(f"obs['{k}'] contains NaN or inf")
            batch[k] = x.shape[0]
            parts[k] = policy.normalizer.normalize(x, policy._norm_key[k])
        if len(set(batch.values())) != 1:
            raise ValueError(f"observation batch sizes differ: {batch}")
        parts.update(self.encode(images, train=train))
        b = next(iter(batch.values()))
        return torch.cat([parts[k] for k in self.cond_order], dim=-1).reshape(b, -1)


__all__ = ["ImageConditioner", "STYLES", "build_encoders", "encoder_input_shape"]
