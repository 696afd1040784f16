import pytest
import torch

from parapolicy.normalizer import LinearNormalizer


def test_limits_maps_min_max_to_unit_interval_and_round_trips():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100, 3, generator=g) * torch.tensor([10.0, 500.0, 1.0]) + torch.tensor([0.0, -3.0, 7.0])
    n = LinearNormalizer().fit({"obs": x})
    y = n.normalize(x, "obs")
    torch.testing.assert_close(y.min(0).values, -torch.ones(3))
    torch.testing.assert_close(y.max(0).values, torch.ones(3))
    torch.testing.assert_close(n.unnormalize(y, "obs"), x, atol=1e-4, rtol=1e-5)


def test_constant_dimension_is_centred_not_divided_by_zero():
    x = torch.stack([torch.linspace(0, 1, 10), torch.full((10,), 5.0)], dim=-1)
    n = LinearNormalizer().fit({"a": x})
    y = n.normalize(x, "a")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 1], torch.zeros(10))


def test_state_dict_layout_and_reload():
    x = torch.randn(50, 4)
    n = LinearNormalizer().fit({"obs": x, "action": x[:, :2]})
    sd = n.state_dict()
    for k in ["params_dict.obs.scale", "params_dict.obs.offset", "params_dict.obs.input_stats.min",
              "params_dict.obs.input_stats.max", "params_dict.obs.input_stats.mean",
              "params_dict.obs.input_stats.std", "params_dict.action.scale"]:
        assert k in sd
    # Diffusion Policy keeps the normaliser inside the policy state dict under "normalizer."
    m = LinearNormalizer().load_flat_state({"normalizer." + k: v for k, v in sd.items()}, prefix="normalizer.")
    torch.testing.assert_close(m.normalize(x, "obs"), n.normalize(x, "obs"))


def test_unknown_key_is_named():
    n = LinearNormalizer().fit({"obs": torch.randn(5, 2)})
    with pytest.raises(KeyError, match="no key 'action'"):
        n.normalize(torch.zeros(1, 2), "action")
