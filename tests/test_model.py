import subprocess
import sys

import pytest
import torch

from parapolicy.model import ConditionalUnet1D


def test_full_size_parameter_count_matches_diffusion_policy():
    # Diffusion Policy's Push-T low-dim UNet has 65,783,298 parameters (FACTS.md).
    m = ConditionalUnet1D(2, global_cond_dim=40, diffusion_step_embed_dim=256, down_dims=[256, 512, 1024],
                          kernel_size=5, n_groups=8, cond_predict_scale=True)
    assert sum(p.numel() for p in m.parameters()) == 65_783_298


def test_parameter_names_follow_the_original_layout():
    m = ConditionalUnet1D(2, local_cond_dim=3, global_cond_dim=4, diffusion_step_embed_dim=16,
                          down_dims=[8, 16, 32], kernel_size=3, n_groups=4, cond_predict_scale=True)
    names = set(m.state_dict())
    for name in ["diffusion_step_encoder.1.weight", "diffusion_step_encoder.3.bias",
                 "down_modules.0.0.blocks.0.block.0.weight", "down_modules.0.0.blocks.1.block.1.bias",
                 "down_modules.0.0.cond_encoder.1.weight", "down_modules.0.0.residual_conv.weight",
                 "down_modules.0.2.conv.weight", "up_modules.0.2.conv.weight", "mid_modules.1.cond_encoder.1.bias",
                 "final_conv.0.block.0.weight", "final_conv.1.weight", "local_cond_encoder.1.blocks.0.block.0.weight"]:
        assert name in names, name
    assert not any(n.startswith("down_modules.2.2") for n in names)  # last level has no downsampler
    # FiLM with scale predicts 2*C channels
    assert m.down_modules[0][0].cond_encoder[1].weight.shape == (16, 16 + 4)


@pytest.mark.parametrize("timestep", [3, torch.tensor(3), torch.tensor([3, 3, 3])])
def test_forward_shapes_and_timestep_forms_agree(timestep):
    torch.manual_seed(0)
    m = ConditionalUnet1D(2, global_cond_dim=6, diffusion_step_embed_dim=16, down_dims=[8, 16],
                          kernel_size=3, n_groups=4).eval()
    x, c = torch.randn(3, 8, 2), torch.randn(3, 6)
    out = m(x, timestep, global_cond=c)
    assert out.shape == x.shape
    ref = m(x, torch.full((3,), 3, dtype=torch.long), global_cond=c)
    torch.testing.assert_close(out, ref)


def test_local_cond_changes_output():
    torch.manual_seed(0)
    m = ConditionalUnet1D(2, local_cond_dim=3, diffusion_step_embed_dim=16, down_dims=[8, 16],
                          kernel_size=3, n_groups=4).eval()
    x, lc = torch.randn(2, 8, 2), torch.randn(2, 8, 3)
    assert not torch.allclose(m(x, 1, local_cond=lc), m(x, 1, local_cond=torch.zeros_like(lc)))


def test_import_parapolicy_stays_light():
    code = ("import sys, parapolicy, parapolicy.policy, parapolicy.sampling, parapolicy.checkpoint;"
            "heavy = [m for m in ('hydra', 'wandb', 'gymnasium', 'pymunk', 'zarr') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import parapolicy pulled in {out.stdout.strip()}"
