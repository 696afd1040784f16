"""The shared DDIM step math (parapolicy.schedule: output_to_x0, output_to_eps, ddim_step) against the formulas
it replaced in distill.py, consistency_math.py and step_mean, written out here; bit for bit."""

from __future__ import annotations

import pytest
import torch

from parapolicy.schedule import ddim_step, output_to_eps, output_to_x0, per_row


def _inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 4, 3, generator=g, dtype=dtype)
    out = torch.randn(5, 4, 3, generator=g, dtype=dtype)
    ab = torch.rand(5, 1, 1, generator=g, dtype=dtype) * 0.98 + 0.01
    return x, out, ab.sqrt(), (1 - ab).sqrt()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddim_pieces_match_the_old_formulas(dtype, prediction_type):
    x, out, a, b = _inputs(dtype)
    old_x0 = {"epsilon": (x - b * out) / a, "sample": out, "v_prediction": a * x - b * out}[prediction_type]
    old_eps = {"epsilon": out, "sample": (x - a * out) / b,
               "v_prediction": b * x + a * out}[prediction_type]   # distill wrote sigma z + alpha v
    assert torch.equal(output_to_x0(out, x, a, b, prediction_type), old_x0)
    assert torch.equal(output_to_eps(out, x, a, b, prediction_type), old_eps)
    _, _, a2, b2 = _inputs(dtype, seed=1)
    clipped = old_x0.clamp(-1.0, 1.0)
    assert torch.equal(ddim_step(clipped, old_eps, a2, b2), a2 * clipped + b2 * old_eps)


def test_distill_and_consistency_ddim_steps_are_the_old_formulas():
    from parapolicy import consistency_math as C
    from parapolicy import distill_math as DM

    x, out, a, b = _inputs(torch.float64)
    _, _, a2, b2 = _inputs(torch.float64, seed=1)
    flat = [v.flatten() for v in (a, b, a2, b2)]
    for pt in ("epsilon", "sample", "v_prediction"):
        x0 = {"epsilon": (x - b * out) / a, "sample": out, "v_prediction": a * x - b * out}[pt]
        eps = {"epsilon": out, "sample": (x - a * out) / b, "v_prediction": b * x + a * out}[pt]
        want = a2 * x0.clamp(-1.0, 1.0) + b2 * eps
        assert torch.equal(DM.ddim_step(out, x, *flat, pt, clip_range=1.0), want)
    # consistency teacher, DDIM solver: epsilon model, levels n -> m from alphas_cumprod
    ac = torch.linspace(0.999, 0.01, 20, dtype=torch.float64)
    n, m = torch.tensor([20, 5, 3, 1]), torch.tensor([10, 0, 2, 0])
    xs = torch.randn(4, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def eps_fn(z, t):
        return torch.sin(z) + t[:, None, None].to(z.dtype) * 0.01

    a_n, s_n = C.levels(ac, n)
    a_m, s_m = C.levels(ac, m)
    e = eps_fn(xs, n - 1)
    x0 = ((xs - per_row(s_n, xs) * e) / per_row(a_n, xs)).clamp(-1.0, 1.0)
    want = per_row(a_m, xs) * x0 + per_row(s_m, xs) * e
    assert torch.equal(C.teacher_ode_step(eps_fn, xs, n, m, ac, solver="ddim", clip=1.0), want)


def test_unknown_prediction_type_is_named():
    x, out, a, b = _inputs(torch.float32)
    with pytest.raises(ValueError, match="prediction_type"):
        output_to_x0(out, x, a, b, "velocity")
    with pytest.raises(ValueError, match="prediction_type"):
        output_to_eps(out, x, a, b, "velocity")
