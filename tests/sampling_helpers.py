"""Shared fixtures for the sampler tests: a closed-form Gaussian denoiser, a tiny UNet, diffusers loops."""

from __future__ import annotations

import torch


class GaussianDenoiser:
    """Exact denoiser of data x0 ~ N(mu(cond), s^2 I), elementwise (so it is batch-size invariant).

    x_t = sqrt(ab) x0 + sqrt(1-ab) eps  =>  x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab), and
    E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab),
    E[x0 | x_t]  = mu + sqrt(ab) s^2 (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab),
    v = sqrt(ab) eps - sqrt(1-ab) x0.
    mu(cond) = base (H, D) + mean of cond per row. Counts its calls and rows."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon", H: int = 8, D: int = 2,
                 s: float = 0.5):
        g = torch.Generator().manual_seed(1)
        self.ac = alphas_cumprod.double()
        self.pred = prediction_type
        self.base = 0.6 * torch.randn(H, D, generator=g, dtype=torch.float64)
        self.s = s
        self.calls = 0
        self.rows = 0

    def __call__(self, x, t, cond):
        self.calls += 1
        self.rows += x.shape[0]
        ab = self.ac[t.cpu()].view(-1, 1, 1)
        mu = self.base[None]
        if cond is not None:
            mu = mu + cond.double().mean(-1).view(-1, 1, 1)
        xd = x.double()
        var = ab * self.s ** 2 + 1 - ab
        eps = (1 - ab).sqrt() * (xd - ab.sqrt() * mu) / var
        x0 = mu + ab.sqrt() * self.s ** 2 * (xd - ab.sqrt() * mu) / var
        if self.pred == "epsilon":
            out = eps
        elif self.pred == "sample":
            out = x0
        else:
            out = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        return out.to(x.dtype)


def tiny_unet(global_cond_dim: int = 6, seed: int = 0, scale: float = 1.0):
    """A random ConditionalUnet1D (down_dims (8, 16), n_groups 4) wrapped as a denoiser."""
    from parapolicy.model import ConditionalUnet1D

    torch.manual_seed(seed)
    unet = ConditionalUnet1D(2, global_cond_dim=global_cond_dim, down_dims=(8, 16), n_groups=4,
                             diffusion_step_embed_dim=16, kernel_size=3).eval()

    def den(x, t, c):
        return scale * unet(x, t, global_cond=c)

    return den


def diffusers_loop(scheduler, denoiser, x_T, cond, num_inference_steps=None, seed=0):
    """The plain diffusers loop: set_timesteps on a copy, then scheduler.step per timestep. DDPM noise is
    drawn by diffusers from a generator seeded `seed`; returns (x_0, noise (S, B, H, D) it drew)."""
    from diffusers import DDPMScheduler

    s = type(scheduler).from_config(scheduler.config)
    if num_inference_steps is not None:
        s.set_timesteps(num_inference_steps)
    gen = torch.Generator().manual_seed(seed)
    x = x_T.clone()
    with torch.no_grad():
        for t in s.timesteps:
            out = denoiser(x, t.expand(x.shape[0]).long(), cond)
            if isinstance(s, DDPMScheduler):
                x = s.step(out, t, x, generator=gen).prev_sample
            else:
                x = s.step(out, t, x).prev_sample
    # the noise diffusers drew: the same generator, one (B, H, D) draw per step with t > 0
    gen = torch.Generator().manual_seed(seed)
    noise = torch.stack([torch.randn(x_T.shape, generator=gen) if int(t) > 0 else torch.zeros_like(x_T)
                         for t in s.timesteps])
    return x, noise


def accepted_input_residuals(stats) -> list[float]:
    """Residuals (compared with tol in `sample_picard`'s rule) of every point that was *used as an accepted
    input*: in a round over [s, s+n) that advanced the window to s', the points x_{s+1}..x_{s'-1}. The
    ParaDiGMS guarantee says each is <= tol (with atol = 0). Reconstructed from stats.windows / residuals."""
    return [r for _j, r in accepted_input_points(stats)]


def accepted_input_points(stats) -> list[tuple[int, float]]:
    """(point index j, residual ratio) of every accepted input point, as `accepted_input_residuals`."""
    begin_next = {}
    out = []
    rounds = list(zip(stats.windows, stats.residuals))
    for r, (wins, res) in enumerate(rounds):
        for (b, s, _e), vec in zip(wins, res):
            nxt = None
            for later in stats.windows[r + 1:]:
                hit = [w for w in later if w[0] == b]
                if hit:
                    nxt = hit[0][1]
                    break
            if nxt is None:
                nxt = stats.converged_steps[b]
            begin_next[b] = nxt
            out.extend((s + 1 + i, float(v)) for i, v in enumerate(vec[:max(0, nxt - s - 1)]))
    return out
