"""Image encoders of image-based Diffusion Policies, state_dict-compatible with their sources (no torchvision).

A ResNet-18 trunk with every BatchNorm replaced by GroupNorm(C // 16, C) (what LeRobot, diffusion_policy and
its robomimic encoder do with `use_group_norm` / `obs_encoder_group_norm`), two spatial-softmax variants and
the three encoders, each with its source's parameter names:

    LeRobotRgbEncoder   (LeRobot DiffusionRgbEncoder; under `diffusion.rgb_encoder.` or `.rgb_encoder.<i>.`)
        backbone.{0: conv1, 1: bn1, 4..7: layer1..layer4}.*   torchvision resnet18 children()[:-2]
        pool.nets.{weight,bias}, pool.pos_grid (H*W, 2)        SpatialSoftmax(num_kp)
        out.{weight,bias}                                       Linear(2K, 2K), then ReLU
    DPResNet            (diffusion_policy get_resnet("resnet18"), fc = Identity; `obs_encoder.key_model_map.<k>.`)
        conv1, bn1, layer1..layer4 (torchvision names), global average pool -> (N, 512)
    RobomimicVisualCore (robomimic 0.2 VisualCore in DP's hybrid policy; `obs_encoder.obs_nets.<k>.`)
        backbone.nets.{0,1,4..7}.*  (ResNet18Conv), pool.{nets.*, temperature, pos_x, pos_y} (SpatialSoftmax),
        nets.{0: backbone, 1: pool, 2: Flatten, 3: Linear}.*  (the same modules registered twice)

`width` (channels of the first stage, 64 in resnet18) and `blocks` (BasicBlocks per stage, 2,2,2,2) make
smaller trunks of the same family (width >= 16 so that GroupNorm keeps C // 16 >= 1 groups).

Preprocessing (`preprocess`): resize (bilinear, antialiased, as torchvision's tensor Resize), crop (random
at training, centre at eval: torchvision CenterCrop's offsets int(round((H - h) / 2))), optional ImageNet
normalisation. Inputs are (N, C, H, W) float.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def norm_layer(channels: int, norm: str = "group") -> nn.Module:
    """"group": GroupNorm(C // 16, C); "batch": BatchNorm2d (used in eval mode only: running statistics)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm != "group":
        raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")
    return group_norm(channels)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(C // 16, C): the BatchNorm replacement of LeRobot and diffusion_policy."""
    if channels < 16:
        raise ValueError(f"GroupNorm(C // 16) needs C >= 16 channels, got {channels}")
    return nn.GroupNorm(channels // 16, channels)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (names conv1, bn1, conv2, bn2, downsample.{0,1}) with GroupNorm."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "group"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(cout, norm)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(cout, norm)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def resnet_trunk(in_channels: int = 3, width: int = 64, blocks=(2, 2, 2, 2), norm: str = "group") -> list[nn.Module]:
    """[conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4] as torchvision builds resnet18 (children
    before avgpool/fc), GroupNorm instead of BatchNorm. Output channels width * 8."""
    if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
        raise ValueError(f"blocks must be 4 counts >= 1 (one per stage), got {blocks!r}")
    mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), norm_layer(width, norm),
                             nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for i, n in enumerate(blocks):
        cout = width * 2 ** i
        layer = [BasicBlock(cin, cout, 1 if i == 0 else 2, norm)]
        layer += [BasicBlock(cout, cout, 1, norm) for _ in range(int(n) - 1)]
        mods.append(nn.Sequential(*layer))
        cin = cout
    return mods


def feature_map_shape(module: nn.Module, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(C, H, W) the module outputs for one (C, H, W) input (a dry run, as LeRobot's get_output_shape)."""
    with torch.no_grad():
        return tuple(module(torch.zeros(1, *in_shape)).shape[1:])


def _linspace_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pos_x, pos_y (h*w,) from numpy's meshgrid of linspace(-1, 1) (both sources use numpy, not torch)."""
    px, py = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
    return torch.from_numpy(px.reshape(-1)).float(), torch.from_numpy(py.reshape(-1)).float()


class LeRobotSpatialSoftmax(nn.Module):
    """Keypoints: 1x1 conv to K maps, softmax over H*W, expected (x, y). Buffer pos_grid (H*W, 2)."""

    def __init__(self, in_shape: tuple[int, int, int], num_kp: int = 32):
        super().__init__()
        c, self.h, self.w = in_shape
        self.nets = nn.Conv2d(c, num_kp, kernel_size=1)
        self.num_kp = num_kp
        px, py = _linspace_grid(self.h, self.w)
        self.register_buffer("pos_grid", torch.stack([px, py], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, K, 2)
        att = F.softmax(self.nets(x).reshape(-1, self.h * self.w), dim=-1)
        return (att @ self.pos_grid).view(-1, self.num_kp, 2)


class RobomimicSpatialSoftmax(nn.Module):
    """robomimic's SpatialSoftmax (fixed temperature, no variance output; training noise not reproduced):
    buffers temperature (1,), pos_x, pos_y (1, H*W)."""

    def __init__(self, in_shape: tuple[int, int, int], num_kp: int = 32, temperature: float = 1.0):
        super().__init__()
        c, self.h, self.w = in_shape
        self.nets = nn.Conv2d(c, num_kp, kernel_size=1)
        self.num_kp = num_kp
        self.register_buffer("temperature", torch.ones(1) * temperature)
        px, py = _linspace_grid(self.h, self.w)
        self.register_buffer("pos_x", px[None])
        self.register_buffer("pos_y", py[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, K, 2)
        att = F.softmax(self.nets(x).reshape(-1, self.h * self.w) / self.temperature, dim=-1)
        ex = torch.sum(self.pos_x * att, dim=1, keepdim=True)
        ey = torch.sum(self.pos_y * att, dim=1, keepdim=True)
        return torch.cat([ex, ey], 1).view(-1, self.num_kp, 2)


class LeRobotRgbEncoder(nn.Module):
    """(N, C, h, w) preprocessed image -> (N, 2K) = ReLU(out(flatten(pool(backbone(x)))))."""

    def __init__(self, in_shape: tuple[int, int, int], num_kp: int = 32, width: int = 64, blocks=(2, 2, 2, 2),
                 norm: str = "group"):
        super().__init__()
        self.backbone = nn.Sequential(*resnet_trunk(in_shape[0], width, blocks, norm))
        self.pool = LeRobotSpatialSoftmax(feature_map_shape(self.backbone, in_shape), num_kp)
        self.feature_dim = 2 * num_kp
        self.out = nn.Linear(2 * num_kp, self.feature_dim)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.out(torch.flatten(self.pool(self.backbone(x)), start_dim=1)))


class DPResNet(nn.Module):
    """torchvision resnet18 with fc = Identity (diffusion_policy's get_resnet) and GroupNorm: (N, C, h, w) ->
    (N, width * 8) after global average pooling."""

    def __init__(self, in_channels: int = 3, width: int = 64, blocks=(2, 2, 2, 2), norm: str = "group"):
        super().__init__()
        (self.conv1, self.bn1, self.relu, self.maxpool,
         self.layer1, self.layer2, self.layer3, self.layer4) = resnet_trunk(in_channels, width, blocks, norm)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.feature_dim = width * 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet18Conv(nn.Module):
    """robomimic's ResNet18Conv: `nets` = resnet18 children()[:-2]."""

    def __init__(self, in_channels: int = 3, width: int = 64, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.nets = nn.Sequential(*resnet_trunk(in_channels, width, blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nets(x)


class RobomimicVisualCore(nn.Module):
    """robomimic VisualCore(ResNet18Conv, SpatialSoftmax, flatten, Linear(2K, feature_dim)); the ReLU that
    robomimic's ObservationEncoder applies after each obs net is applied here too. (N, C, h, w) -> (N, D)."""

    def __init__(self, in_shape: tuple[int, int, int], num_kp: int = 32, feature_dim: int = 64,
                 temperature: float = 1.0, width: int = 64, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.backbone = ResNet18Conv(in_shape[0], width, blocks)
        self.pool = RobomimicSpatialSoftmax(feature_map_shape(self.backbone, in_shape), num_kp, temperature)
        self.nets = nn.Sequential(self.backbone, self.pool, nn.Flatten(1, -1), nn.Linear(2 * num_kp, feature_dim))
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.nets(x))


def center_crop_offsets(h: int, w: int, ch: int, cw: int, rule: str = "round") -> tuple[int, int]:
    """Top/left of a centre crop. rule "round": torchvision CenterCrop, int(round((H - h) / 2)) (Python's
    round, half to even; also DP's CropRandomizer at eval, which calls torchvision's center_crop); "floor":
    robomimic's ObsUtils.center_crop, (H - h) // 2. They differ only when H - h is odd."""
    if ch > h or cw > w:
        raise ValueError(f"crop {ch}x{cw} is larger than the image {h}x{w}")
    if rule == "floor":
        return (h - ch) // 2, (w - cw) // 2
    return int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))


def preprocess(x: torch.Tensor, resize=None, crop=None, imagenet: bool = False, train: bool = False,
               generator: torch.Generator | None = None, center_rule: str = "round") -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w): resize (bilinear, antialias), crop (centre by `center_rule`; random per
    image when `train`), ImageNet mean/std."""
    if resize is not None:
        x = F.interpolate(x, size=tuple(int(s) for s in resize), mode="bilinear", align_corners=False,
                          antialias=True)
    if crop is not None:
        ch, cw = (int(s) for s in crop)
        h, w = x.shape[-2:]
        if train:
            if ch > h or cw > w:
                raise ValueError(f"crop {ch}x{cw} is larger than the image {h}x{w}")
            tops = torch.randint(0, h - ch + 1, (x.shape[0],), generator=generator)
            lefts = torch.randint(0, w - cw + 1, (x.shape[0],), generator=generator)
            x = torch.stack([x[i, :, t:t + ch, s:s + cw] for i, (t, s) in enumerate(zip(tops.tolist(),
                                                                                        lefts.tolist()))])
        else:
            t, s = center_crop_offsets(h, w, ch, cw, center_rule)
            x = x[..., t:t + ch, s:s + cw]
    if imagenet:
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
        x = (x - mean) / std
    return x


ENCODERS = ("lerobot", "dp_resnet", "robomimic")


def build_encoder(kind: str, in_shape, *, num_kp: int = 32, feature_dim: int = 64, width: int = 64,
                  blocks=(2, 2, 2, 2), temperature: float = 1.0, norm: str = "group") -> nn.Module:
    """One encoder of `kind` for preprocessed images of shape in_shape (C, h, w). norm "batch" (BatchNorm with
    running statistics, eval only) exists for LeRobot and DP encoders trained without GroupNorm."""
    in_shape = tuple(int(s) for s in in_shape)
    if kind == "lerobot":
        return LeRobotRgbEncoder(in_shape, num_kp, width, blocks, norm)
    if kind == "dp_resnet":
        return DPResNet(in_shape[0], width, blocks, norm)
    if kind == "robomimic":
        return RobomimicVisualCore(in_shape, num_kp, feature_dim, temperature, width, blocks)
    raise ValueError(f"unknown image encoder {kind!r}; choose one of {', '.join(ENCODERS)}")


def trunk_layout_from_state(state: dict, prefix: str, conv1: str, layer_names: list[str]) -> dict:
    """{in_channels, width, blocks} of a GroupNorm ResNet trunk read from weight names/shapes.

    conv1: name of the stem conv weight (after prefix); layer_names: the 4 stage prefixes."""
    w = state.get(prefix + conv1)
    if w is None:
        raise ValueError(f"no '{prefix + conv1}' tensor: not a ResNet image encoder")
    blocks = []
    for name in layer_names:
        n = 0
        while f"{prefix}{name}.{n}.conv1.weight" in state:
            n += 1
        if n == 0:
            raise ValueError(f"no '{prefix}{name}.0.conv1.weight' tensor: not a ResNet-18-style trunk")
        blocks.append(n)
    return {"in_channels": int(w.shape[1]), "width": int(w.shape[0]), "blocks": tuple(blocks)}


__all__ = ["BasicBlock", "DPResNet", "ENCODERS", "LeRobotRgbEncoder", "LeRobotSpatialSoftmax",
           "ResNet18Conv", "RobomimicSpatialSoftmax", "RobomimicVisualCore", "build_encoder",
           "center_crop_offsets", "feature_map_shape", "group_norm", "preprocess", "resnet_trunk",
           "trunk_layout_from_state"]
