"""Reference image encoders, written independently of parapolicy.vision: plain functional ops over state dicts
keyed by each source's own parameter names (torchvision resnet18 names, or the nn.Sequential indices of
`children()[:-2]`), following LeRobot's DiffusionRgbEncoder / `_prepare_global_conditioning`,
diffusion_policy's MultiImageObsEncoder + get_resnet, and robomimic's VisualCore + ObservationEncoder.

`make_resnet_state` draws a GroupNorm resnet18 state dict with a source's names, so tests build checkpoints
without going through parapolicy's modules.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TORCHVISION = {"conv1": "conv1", "bn1": "bn1", "layers": ["layer1", "layer2", "layer3", "layer4"]}
SEQUENTIAL = {"conv1": "0", "bn1": "1", "layers": ["4", "5", "6", "7"]}


def make_resnet_state(names: dict, g: torch.Generator, width: int = 64, blocks=(2, 2, 2, 2)) -> dict:
    """Random GroupNorm resnet18-family tensors {name: tensor} with `names` (TORCHVISION or SEQUENTIAL)."""

    def conv(cout, cin, k):
        return torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5

    def gn(prefix, c, sd):
        sd[f"{prefix}.weight"] = 1 + 0.2 * torch.randn(c, generator=g)
        sd[f"{prefix}.bias"] = 0.2 * torch.randn(c, generator=g)

    sd = {f"{names['conv1']}.weight": conv(width, 3, 7)}
    gn(names["bn1"], width, sd)
    cin = width
    for i, layer in enumerate(names["layers"]):
        cout = width * 2 ** i
        for b in range(blocks[i]):
            p = f"{layer}.{b}"
            first_in = cin if b == 0 else cout
            sd[f"{p}.conv1.weight"] = conv(cout, first_in, 3)
            gn(f"{p}.bn1", cout, sd)
            sd[f"{p}.conv2.weight"] = conv(cout, cout, 3) * 0.5
            gn(f"{p}.bn2", cout, sd)
            if b == 0 and (i > 0 or cin != cout):
                sd[f"{p}.downsample.0.weight"] = conv(cout, first_in, 1)
                gn(f"{p}.downsample.1", cout, sd)
        cin = cout
    return sd


def _gn(x, sd, p):
    c = x.shape[1]
    return F.group_norm(x, c // 16, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-5)


def resnet_features(x, sd, names, prefix="") -> torch.Tensor:
    """torchvision resnet18 forward up to layer4 (BasicBlocks, GroupNorm): (N, 3, H, W) -> (N, 512, h, w)."""
    x = F.conv2d(x, sd[f"{prefix}{names['conv1']}.weight"], stride=2, padding=3)
    x = F.relu(_gn(x, sd, f"{prefix}{names['bn1']}"))
    x = F.max_pool2d(x, 3, 2, 1)
    for i, layer in enumerate(names["layers"]):
        b = 0
        while f"{prefix}{layer}.{b}.conv1.weight" in sd:
            p = f"{prefix}{layer}.{b}"
            stride = 2 if (b == 0 and i > 0) else 1
            out = F.relu(_gn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), sd, f"{p}.bn1"))
            out = _gn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                x = _gn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            x = F.relu(out + x)
            b += 1
    return x


def center_crop(x, h, w):
    """torchvision CenterCrop offsets."""
    top = int(round((x.shape[-2] - h) / 2.0))
    left = int(round((x.shape[-1] - w) / 2.0))
    return x[..., top:top + h, left:left + w]


def grid(h, w):
    px, py = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
    return torch.tensor(px.reshape(-1), dtype=torch.float32), torch.tensor(py.reshape(-1), dtype=torch.float32)


def keypoints(feat, conv_w, conv_b, temperature=1.0):
    """Spatial softmax: (N, C, h, w) -> (N, K * 2) flattened [x0, y0, x1, y1, ...]."""
    maps = F.conv2d(feat, conv_w, conv_b)
    n, k, h, w = maps.shape
    att = torch.softmax(maps.reshape(n, k, h * w) / temperature, dim=-1)
    px, py = grid(h, w)
    return torch.stack([(att * px).sum(-1), (att * py).sum(-1)], dim=-1).reshape(n, k * 2)


# ----------------------------------------------------------------------------------------------- LeRobot
def lerobot_rgb_encoder(x, sd, prefix, crop):
    """DiffusionRgbEncoder at eval on normalised images (N, 3, H, W)."""
    if crop is not None:
        x = center_crop(x, *crop)
    f = resnet_features(x, sd, SEQUENTIAL, prefix + "backbone.")
    kp = keypoints(f, sd[prefix + "pool.nets.weight"], sd[prefix + "pool.nets.bias"])
    return F.relu(F.linear(kp, sd[prefix + "out.weight"], sd[prefix + "out.bias"]))


def lerobot_global_cond(batch, sd, *, image_keys, state_n, env_n, img_stats, crop, separate, eps=1e-8):
    """`_prepare_global_conditioning`: state_n / env_n normalised (B, S, d) (env_n may be None), images
    batch[k] (B, S, 3, H, W) in [0, 1] normalised mean_std with img_stats[k] (3, 1, 1)."""
    imgs = torch.stack([(batch[k] - img_stats[k]["mean"]) / (img_stats[k]["std"] + eps) for k in image_keys],
                       dim=-4)  # (B, S, N, 3, H, W)
    b, s, n = imgs.shape[:3]
    if separate:
        per_cam = imgs.permute(2, 0, 1, 3, 4, 5).reshape(n, b * s, *imgs.shape[3:])
        feats = torch.cat([lerobot_rgb_encoder(per_cam[i], sd, f"diffusion.rgb_encoder.{i}.", crop)
                           for i in range(n)])  # (n b s) d
        feats = feats.reshape(n, b, s, -1).permute(1, 2, 0, 3).reshape(b, s, -1)
    else:
        feats = lerobot_rgb_encoder(imgs.reshape(b * s * n, *imgs.shape[3:]), sd, "diffusion.rgb_encoder.", crop)
        feats = feats.reshape(b, s, -1)  # (b s n) d -> b s (n d)
    parts = [state_n, feats] + ([env_n] if env_n is not None else [])
    return torch.cat(parts, dim=-1).flatten(start_dim=1)


# ------------------------------------------------------------------------------------- diffusion_policy
IMAGENET = (torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None])


def dp_normalize(x, scale, offset):
    """SingleFieldLinearNormalizer._normalize: reshape(-1, D) * scale + offset."""
    shape = x.shape
    return (x.reshape(-1, scale.shape[0]) * scale + offset).reshape(shape)


def dp_multi_image_encoder(nobs, sd, *, rgb_keys, low_keys, crop, imagenet, shared):
    """MultiImageObsEncoder.forward at eval on {key: (N, ...)} normalised; rgb keys processed sorted."""
    feats = []
    for k in sorted(rgb_keys):
        x = nobs[k]
        if crop is not None:
            x = center_crop(x, *crop)
        if imagenet:
            x = (x - IMAGENET[0]) / IMAGENET[1]
        prefix = "obs_encoder.key_model_map." + ("rgb." if shared else f"{k}.")
        f = resnet_features(x, sd, TORCHVISION, prefix)
        feats.append(f.mean(dim=(-2, -1)))
    feats += [nobs[k] for k in sorted(low_keys)]
    return torch.cat(feats, dim=-1)


def robomimic_obs_encoder(nobs, sd, *, order, rgb_keys, crop):
    """robomimic ObservationEncoder.forward (DP hybrid, eval, fixed centre crop): keys in `order`."""
    feats = []
    for k in order:
        x = nobs[k]
        if k in rgb_keys:
            p = f"obs_encoder.obs_nets.{k}."
            x = center_crop(x, *crop)
            f = resnet_features(x, sd, SEQUENTIAL, p + "backbone.nets.")
            kp = keypoints(f, sd[p + "pool.nets.weight"], sd[p + "pool.nets.bias"], float(sd[p + "pool.temperature"]))
            x = F.relu(F.linear(kp, sd[p + "nets.3.weight"], sd[p + "nets.3.bias"]))
        feats.append(x.reshape(x.shape[0], -1))
    return torch.cat(feats, dim=-1)
