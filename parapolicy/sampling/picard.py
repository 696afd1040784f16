"""Picard (ParaDiGMS) sliding-window sampling: ParaDDPM, ParaDDIM, ParaDPMSolver.

Shih et al., "Parallel Sampling of Diffusion Models", NeurIPS 2023, Alg. 1, with one window per sample.

With the noise z_k of every step drawn in advance, the reverse process is a deterministic recursion

    x_{k+1} = G_k(x_k) = mean_k(x_k) + std_k z_k,      k = 0 .. S-1,  x_0 = x_T            (1)

(mean_k also reads the data predictions m_{k-1}, m_{k-2} for multistep DPM-Solver++). One Picard round over
the window [s, s+n) evaluates G at the current iterate for all n steps in ONE batched denoiser call and
updates the window by the cumulative drift anchored at the accepted point x_s (ParaDiGMS eq. 5):

    x_{j+1}^new = x_s + sum_{i=s..j} (G_i(x_i^old) - x_i^old)
                = G_j(x_j^old) + sum_{i=s..j-1} (G_i(x_i^old) - x_{i+1}^old)                   (2)

(the second form is computed: at j = s it is exactly the sequential step, so window=1 is sequential sampling
bit for bit). With D_j = x_j^new - x_j^old (D_s = 0), (2) is x_{j+1}^new = G_j(x_j^old) + D_j: it carries
the change of a step's input through with gain 1. `update="parareal"` (opt-in) carries it through the
step's frozen-x0 gain a_j of (4) instead, a Parareal / quasi-Newton step whose coarse propagator is the
frozen-x0 rollout (dG_j/dx ~ a_j where the data prediction is insensitive to x, the noisy end):

    x_{j+1}^new = G_j(x_j^old) + a_j D_j                                                    (2')

`update="secant"` (opt-in) corrects that gain along the step's last input change: a step evaluated before,
at x_k^prev, has the secant dG_k = G_k(x_k^old) - G_k(x_k^prev), dx_k = x_k^old - x_k^prev, and the rank-1
(Broyden) update of a_k that is exact along dx_k carries

    x_{j+1}^new = G_j(x_j^old) + a_j D_j + (dG_j - a_j dx_j) <dx_j, D_j> / |dx_j|^2                 (2'')

(no extra denoiser calls; a step evaluated once keeps a_j). All three have the sequential trajectory as their
fixed point and window=1 / tol=0 as exact limits; (2') and (2'') take fewer rounds on the shipped policy but
land further from the sequential sample within the same tolerance (docs/rounds.md).

A point is accepted while its change is within the tolerance (ParaDiGMS eq. 6, with a floor):

    RMS(x_{j+1}^new - x_{j+1}^old) <= max(tol * sqrt(v_{j+1}), atol)                           (3)

v_j = the DDPM posterior variance of step j (`Schedule.tol_var`; v_S = inf); RMS over the H*D entries. The
window start moves past the accepted prefix: s += (first offset failing (3)) + 1, at most n.

Guarantee: every accepted x_{j+1} was computed from drifts evaluated at points x_i^old (s < i <= j) whose
RMS distance to the accepted x_i is <= max(tol sqrt(v_i), atol): each step's input is perturbed by at most
tol times the noise std that step injects (the sequential sampler's own noise scale), or by atol where that
std vanishes (the last steps). The bound is relative to the accepted trajectory, not to the sequential one;
tol = atol = 0 accepts only unchanged points and gives the sequential result (up to float rounding of the
batched denoiser).

atol = "auto" (opt-in) sets the floor to tol * sqrt(v_min), v_min the smallest v_j above the 1e-20 clamp:
the input of the last step (which adds no noise, v ~ 0) is then held to the tolerance of the last noisy
step instead of to ~0, and every other point keeps its own rule. The bound stays in the sampler's own
units: each step's input moves by at most tol times that step's noise std, and the noise-free last step's
by at most tol times the last noisy step's (DDPM-100 on the shipped Push-T policy: 2.0e-3 normalised RMS,
~0.5 px, at tol 0.1). tol = 0 makes it 0 (exact).

Initial guess of points not yet accepted (`guess`), free of denoiser calls: roll the steps out from a
start e with the data prediction frozen at some x0_hat,

    x_{k+1} = a_k x_k + b_k x0_hat + std_k z_k,        k >= e                                   (4)

(`frozen_x0_coeffs`; all k and all samples at once through the transfer matrix of a). After each round:
"window" re-guesses the points past the window's end from the prediction at the window's furthest point;
"frontier" re-guesses every point past the accepted frontier from the prediction at the last accepted
input (the window's own iterate past the frontier is discarded); "hybrid" (the default) uses the frontier
rule while a sample's frontier is in the first half of the steps (where the frozen-x0 guess beats stale
iterates) and the window rule in the low-noise half (where the Picard iterate is the better guess); "none"
keeps the Picard iterate (plain ParaDiGMS; the default with `init`). Without `init` the first round
evaluates x_T alone (a 1-step window) and the rollout from it is the first guess. Guesses change only where
the iteration starts, never what it converges to or the guarantee. Measured on the shipped Push-T policy
(`python -m eval.bench_rounds`, docs/rounds.md): window 16, tol 0.1: none 27.2 rounds, window 15.3,
frontier 16.5, hybrid 14.0.

Anytime result: the first round always runs, so the result has always seen the network. After a cap
(`max_iters`, or `deadline` on `clock`, checked before every later round) the accepted prefix is kept and
the rest of the trajectory is the rollout (4) from the accepted frontier; for DDPM and DDIM its end point
x_S is exactly x0_hat (the last step of (4) has a = 0, b = 1), i.e. the network's newest clipped data
prediction made at the furthest point evaluated; DPM-Solver++ ends within its last sigma of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch

from parapolicy.sampler_config import GUESSES, STARTS, UPDATES
from parapolicy.sampling.common import (
    Denoiser,
    call_denoiser,
    check_inputs,
    check_tol,
    check_window,
    resolve_noise,
)
from parapolicy.sampling.inpaint import Known
from parapolicy.sampling.rollout import Rollout, transfer_matrix  # noqa: F401  (re-exported)
from parapolicy.sampling.sequential import step_rows
from parapolicy.sampling.stats import PicardStats
from parapolicy.schedule import Schedule, make_schedule, on_device, predict_x0

ACCELS = ("none", "anderson", "taa")
HYBRID_SWITCH = 0.5  # guess "hybrid": frontier rule while a sample's frontier is in the first half of the steps


def sample_picard(denoiser: Denoiser, scheduler, x_T: torch.Tensor, noise: torch.Tensor | None = None,
                  cond: torch.Tensor | None = None, num_inference_steps: int | None = None,
                  window: int | str = 16, tol: float = 0.1, max_iters: int | None = None,
                  init: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  deadline: float | None = None, accel: str | None = None, cost_model=None,
                  accel_memory: int = 3, guess: str = "auto", atol: float | str = 0.0,
                  clock: Callable[[], float] = time.monotonic,
                  known: tuple[torch.Tensor, torch.Tensor] | None = None,
                  update: str = "picard", start: str = "predict",
                  first_window: int | None = None) -> tuple[torch.Tensor, PicardStats]:
    """Parallel-in-time sampling by Picard iteration over a sliding window of `window` steps.

    x_T: (B, H, D); noise: (S, B, H, D) or None (drawn from `generator`, the same draw as
    `sample_sequential`); cond: (B, C) or None; window: steps per sample per round (int >= 1) or "auto"
    (cost model, `parapolicy.sampling.cost`; `cost_model` a {batch: seconds} dict or a `CostModel`);
    tol, atol: the acceptance rule (3) of the module docstring (tol = atol = 0: exact); atol "auto": the
    floor tol * sqrt(smallest noisy-step variance) (module docstring; stats.atol holds the number used);
    max_iters: cap on rounds (>= 1); deadline: a time on `clock` (default `time.monotonic`) checked before
    every round after the first; init: (S+1, B, H, D) initial trajectory (warm start; init[0] is replaced by
    x_T; never modified); guess: "auto" ("hybrid"; "window" with `accel`; "none" with `init`), "hybrid",
    "frontier", "window" or "none" (module docstring); accel: None/"none", "anderson" or "taa" (`accel.py`; changes only
    the unaccepted iterate, so it needs guess "window" or "none"); known: (mask (B, H, D) bool, value
    (B, H, D)) normalised: inpaint the masked entries (`inpaint.py`: the projection is part of every G_k, of
    x_0, of `init` and of the rollout guesses; at tol 0 the same chunk as `sample_sequential(known=...)`);
    update: "picard" (eq. 2), "parareal" (eq. 2') or "secant" (eq. 2''); guess "auto" is then "window");
    start (without `init`): "predict" (the first round evaluates x_T alone; the first guess is the rollout (4)
    from its data prediction) or "zero" (the first guess is the rollout with x0_hat = 0, the centre of the
    normalised data, and the first round is a full window: one round fewer where the noisy steps accept it);
    first_window: the first round's window (int >= 1; None: 1 with start "predict" where the first round
    evaluates x_T alone, i.e. without `init` and guess "none", else `window`). Later rounds use `window`; the
    acceptance rule is the same in every round.

    Returns (x_0 (B, H, D), PicardStats); x_0 = stats.trajectory[S]. After a cap see "Anytime result" in the
    module docstring: `stats.capped`, `stats.iterations` (rounds run, >= 1) and `stats.converged_steps`
    (length of each sample's accepted prefix) say what was reached."""
    table = make_schedule(scheduler, num_inference_steps)
    sched = on_device(table, x_T.device)
    S = sched.num_steps
    B, H, D = check_inputs(x_T, cond, noise, S, init)
    check_tol(tol, max_iters)
    atol = resolve_atol(atol, tol, table.tol_var)                # on the host table: no device sync
    p = check_window(window, S)
    acc_name = "none" if accel is None else accel
    if acc_name not in ACCELS:
        raise ValueError(f"accel must be one of {ACCELS} or None, got {accel!r}")
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    guess = _resolve_guess(guess, init is not None, acc_name, update)
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if start != "predict" and (init is not None or guess == "none"):
        raise ValueError(f"start={start!r} sets the first guess, which init / guess='none' replace: "
                         "use start='predict' with them")
    if first_window is not None and (isinstance(first_window, bool) or not isinstance(first_window, int)
                                     or first_window < 1):
        raise ValueError(f"first_window must be None or an int >= 1, got {first_window!r}")
    predicted = None
    if p == "auto":
        from parapolicy.sampling.cost import choose_window

        p, predicted = choose_window(denoiser, x_T, cond, S, cost_model=cost_model)
    dev, dt = x_T.device, x_T.dtype
    z = resolve_noise(noise, sched.std, x_T, generator)
    traj = init.to(device=dev, dtype=dt).clone() if init is not None else x_T.unsqueeze(0).repeat(S + 1, 1, 1, 1)
    traj[0] = x_T
    kn = None
    if known is not None:
        kn = Known(sched, x_T, known)
        traj = kn.traj(traj)
    roll = partial(Rollout(sched, dev, dt), known=kn)
    if start == "zero":
        every = torch.arange(B, device=dev)
        roll(traj, every, torch.zeros(B, dtype=torch.long, device=dev), torch.zeros_like(x_T), z)
    solve = _Solve(sched, traj, z, cond, tol, atol, dev, kn,
                   gain=roll.func.gain if update in ("parareal", "secant") else None, secant=update == "secant")
    mixer = None
    if acc_name != "none":
        from parapolicy.sampling.accel import AndersonMixer

        mixer = AndersonMixer(S, B, (H, D), memory=accel_memory, triangular=acc_name == "taa", device=dev,
                              dtype=dt)
    if first_window is None:
        first_window = 1 if (init is None and guess != "none" and start == "predict") else p
    capped = False
    with torch.no_grad():
        while True:
            begin = solve.begin.tolist()                          # the round's one host synchronisation
            active = [b for b in range(B) if begin[b] < S]
            if not active:
                break
            if solve.rounds >= 1 and ((max_iters is not None and solve.rounds >= max_iters)
                                      or (deadline is not None and clock() >= deadline)):
                capped = True
                break
            n = [min(first_window if solve.rounds == 0 else p, S - begin[b]) for b in active]
            frontier = solve.round(denoiser, active, begin, n, mixer)
            if guess == "none":
                continue
            ends = torch.tensor([begin[b] + m for b, m in zip(active, n)], device=dev)
            x0_end = solve.x0_hat[solve.active_t]
            if guess == "frontier":
                roll(traj, solve.active_t, frontier, solve.x0_front, z)
            elif guess == "window":
                roll(traj, solve.active_t, ends, x0_end, z)
            else:  # hybrid: the frontier rule in the noisy first half, the window rule in the low-noise rest
                early = frontier < HYBRID_SWITCH * S
                roll(traj, solve.active_t, torch.where(early, frontier, ends),
                     torch.where(early[:, None, None], solve.x0_front, x0_end), z)
        if capped:  # the anytime result: roll every unfinished sample out from its accepted frontier
            left = torch.tensor([b for b in range(B) if begin[b] < S], device=dev)
            roll(traj, left, solve.begin[left], solve.x0_hat[left], z)
    stats = solve.stats(capped, int(p), acc_name, predicted, guess, atol)
    return traj[S].clone(), stats


def resolve_atol(atol: float | str, tol: float, tol_var: torch.Tensor) -> float:
    """The floor of rule (3) as a number: atol itself, or for "auto" tol * sqrt(v_min), v_min the smallest
    tolerance variance of a step input above `_posterior_var`'s 1e-20 clamp (0 if there is none)."""
    if atol == "auto":
        v = tol_var[:-1].double()
        v = v[v > 1e-19]
        return float(tol) * (float(v.min().sqrt()) if v.numel() else 0.0)
    if isinstance(atol, str):
        raise ValueError(f"atol must be a finite number >= 0 or 'auto', got {atol!r}")
    check_tol(atol, None, name="atol")
    return float(atol)


def _resolve_guess(guess: str, has_init: bool, accel: str, update: str = "picard") -> str:
    if guess not in GUESSES:
        raise ValueError(f"guess must be one of {GUESSES}, got {guess!r}")
    if guess == "auto":
        return "none" if has_init else ("window" if accel != "none" or update != "picard" else "hybrid")
    if guess in ("frontier", "hybrid") and accel != "none":
        raise ValueError(f"accel={accel!r} changes only the unaccepted iterate, which guess={guess!r} "
                         "overwrites: use guess='window' or 'none' with it")
    return guess


class _Solve:
    """The iteration's state: trajectory, per-sample window starts (on the device), newest data
    predictions, and the bookkeeping that becomes `PicardStats`. Internal to `sample_picard`."""

    def __init__(self, sched: Schedule, traj: torch.Tensor, z, cond, tol: float, atol: float, dev, known=None,
                 gain: torch.Tensor | None = None, secant: bool = False):
        S1, B, H, D = traj.shape
        self.sched, self.traj, self.z, self.cond, self.dev = sched, traj, z, cond, dev
        self.known = known                                        # inpainting projection (inpaint.py) or None
        self.gain = gain                                          # (S,) a_k of eq. (2'), or None: eq. (2)
        self.S, self.B, self.HD = S1 - 1, B, H * D
        self.begin = torch.zeros(B, dtype=torch.long, device=dev)
        self.x0_hat = torch.zeros_like(traj[0])
        self.hist = traj.new_zeros(traj[1:].shape) if sched.max_order > 1 else None
        var = sched.tol_var.double().to(dev)                     # (S+1,) v_j; v_S = inf
        self.var = var
        self.thr2 = torch.clamp(float(tol) ** 2 * var, min=float(atol) ** 2)  # squared bound of (3)
        self.ts = sched.timesteps.to(dev)
        self.rounds, self.nfe = 0, [0] * B
        self.windows: list = []
        self._resid: list = []
        self.active_t = None
        # update "secant": each step's last evaluation (input, output), for the rank-1 correction of eq. (2'')
        self.prev = (torch.zeros_like(traj[1:]), torch.zeros_like(traj[1:]),
                     torch.zeros(S1 - 1, B, dtype=torch.bool, device=dev)) if secant else None

    def round(self, denoiser, active: list[int], begin: list[int], n: list[int], mixer) -> torch.Tensor:
        """One Picard round over the windows [begin_b, begin_b + n_b) of the active samples; advances
        `self.begin` and returns each active sample's new accepted frontier (A,) (on the device)."""
        traj, dev = self.traj, self.dev
        A, pw = len(active), max(n)
        slot_i = [i for m in n for i in range(m)]                # host-built indices: no device sync
        slot_j = [j for j, m in enumerate(n) for _ in range(m)]
        k_rows = torch.tensor([begin[active[j]] + i for i, j in zip(slot_i, slot_j)], device=dev)
        b_rows = torch.tensor([active[j] for j in slot_j], device=dev)
        si, sj = torch.tensor(slot_i, device=dev), torch.tensor(slot_j, device=dev)
        bs = torch.tensor(active, device=dev)
        s = torch.tensor([begin[b] for b in active], device=dev)
        n_t = torch.tensor(n, device=dev)
        self.active_t = bs

        # 1. evaluate G_k at the current iterate, all window points of all samples in one call (eq. 1)
        x_rows = traj[k_rows, b_rows]
        out = call_denoiser(denoiser, x_rows, self.ts[k_rows], None if self.cond is None else self.cond[b_rows])
        x0_rows = predict_x0(self.sched, k_rows, x_rows, out)
        if self.hist is not None:
            self.hist[k_rows, b_rows] = x0_rows
        g_rows = step_rows(self.sched, k_rows, x_rows, out, self.hist, b_rows, self.z, x0=x0_rows, known=self.known)
        last = torch.tensor([sum(n[:j + 1]) - 1 for j in range(A)], device=dev)
        self.x0_hat[bs] = x0_rows[last]                          # newest prediction: furthest point

        # 2. cumulative drift (eq. 2) in a (pw, A) window layout
        ar = torch.arange(pw, device=dev)
        valid = ar[:, None] < n_t[None, :]
        nxt = (s[None, :] + ar[:, None] + 1).clamp(max=self.S)  # trajectory index each slot updates
        old = traj[nxt, bs[None, :]]                             # (pw, A, H, D) x_{j+1}^old
        G = torch.zeros_like(old)
        G[si, sj] = g_rows
        step = torch.where(valid[..., None, None], G - old, torch.zeros_like(G))
        if self.gain is None:
            carry = torch.cumsum(step, 0)
        elif self.prev is None:
            carry = _gain_scan(step, self.gain, s)
        else:
            U, W = torch.zeros_like(old), torch.zeros_like(old)
            U[si, sj], W[si, sj] = self._secant_rows(k_rows, b_rows, x_rows, g_rows)
            carry = _gain_scan(step, self.gain, s, U, W)
        new = G.clone()
        new[1:] += carry[:-1]

        # 3. errors and acceptance (eq. 3)
        msq = (new - old).flatten(2).double().pow(2).sum(-1) / self.HD     # (pw, A) mean square change
        bad = (msq > self.thr2[nxt]) | ~valid
        first_bad = torch.where(bad.any(0), bad.int().argmax(0), torch.full_like(s, pw))
        adv = torch.minimum(first_bad + 1, n_t)                  # accepted steps this round, >= 1

        X0 = torch.zeros_like(old)
        X0[si, sj] = x0_rows
        self.x0_front = X0[adv - 1, torch.arange(A, device=dev)]   # prediction at the last accepted input
        # 4. write the window (the accepted prefix with plain Picard), advance
        write = new
        if mixer is not None:
            mixed = mixer.mix(nxt, valid, bs, old, new, adv)
            write = torch.where((ar[:, None] < adv[None, :])[..., None, None], new, mixed)
        rows = write[si, sj]
        if mixer is not None and self.known is not None:          # a mixed (extrapolated) iterate: re-project
            rows = self.known.rows(rows, k_rows + 1, b_rows)
        traj[k_rows + 1, b_rows] = rows
        frontier = s + adv
        self.begin[bs] = frontier
        self.rounds += 1
        for b, m in zip(active, n):
            self.nfe[b] += m
        self.windows.append([(b, begin[b], begin[b] + m) for b, m in zip(active, n)])
        self._resid.append((n, (msq / self.var[nxt]).sqrt().float()))
        return frontier

    def _secant_rows(self, k_rows, b_rows, x_rows, g_rows):
        """(u, w) per evaluated row for eq. (2''): J_k v ~ a_k v + u <w, v>, the Broyden rank-1 update of the
        frozen-x0 gain that is exact along this step's last input change: u = dG - a_k dx, w = dx / |dx|^2
        (zero where the step has no earlier evaluation or its input did not move). Stores this evaluation."""
        px, pg, has = self.prev
        dx, dg = x_rows - px[k_rows, b_rows], g_rows - pg[k_rows, b_rows]
        n2 = dx.flatten(1).pow(2).sum(-1)
        ok = has[k_rows, b_rows] & (n2 > 1e-12 * self.HD)
        a = self.gain[k_rows][:, None, None]
        u = torch.where(ok[:, None, None], dg - a * dx, torch.zeros_like(dx))
        w = torch.where(ok[:, None, None], dx / n2.clamp(min=1e-30)[:, None, None], torch.zeros_like(dx))
        px[k_rows, b_rows], pg[k_rows, b_rows], has[k_rows, b_rows] = x_rows, g_rows, True
        return u, w

    def stats(self, capped: bool, window: int, accel: str, predicted, guess: str, atol: float) -> PicardStats:
        steps = self.begin.tolist()
        flat = torch.cat([r.flatten() for _, r in self._resid]).cpu() if self._resid else None  # one transfer
        residuals, at = [], 0
        for n, r in self._resid:
            pw, A = r.shape
            block = flat[at:at + pw * A].view(pw, A)
            at += pw * A
            residuals.append([block[:m, j] for j, m in enumerate(n)])
        return PicardStats(iterations=self.rounds, nfe=sum(self.nfe) / self.B, nfe_per_sample=list(self.nfe),
                           capped=capped, converged_steps=steps, converged=[k >= self.S for k in steps],
                           windows=self.windows, residuals=residuals, trajectory=self.traj, window=window,
                           num_steps=self.S, accel=accel, predicted_latency_s=predicted, guess=guess, atol=atol)


def _gain_scan(step: torch.Tensor, gain: torch.Tensor, s: torch.Tensor, U: torch.Tensor | None = None,
               W: torch.Tensor | None = None) -> torch.Tensor:
    """carry_j = a_{s+j+1} (step_j + carry_{j-1}) + u_{j+1} <w_{j+1}, step_j + carry_{j-1}>, carry_{-1} = 0:
    the carried change of eq. (2') (u = w = 0) or (2''), so that x_{j+1}^new = G_j + carry_{j-1}.
    step, U, W: (pw, A, H, D) per window slot (step = G_j - x_{j+1}^old; U, W the secant rows, or None);
    gain: (S,) on the device; s: (A,) window starts.

    Solved in closed form, a fixed number of tensor operations whatever the window (no loop over its slots,
    no host synchronisation): with P_{ji} = a_{i+1..j} (the product of the gains of slots i+1..j; 1 for
    i = j) the recurrence is carry_j = sum_{i<=j} P_{ji} (a_i step_i + u_{i+1} c_i), and the secant
    coefficients c_j = <w_{j+1}, step_j + carry_{j-1}> solve a lower-triangular system of the window's size."""
    pw, A = step.shape[:2]
    dev, dt = step.device, step.dtype
    ar = torch.arange(pw, device=dev)
    a = gain[(s[None, :] + ar[:, None] + 1).clamp(max=gain.shape[0] - 1)].to(dt)        # (pw, A) a_j
    later = (ar[:, None] > ar[None, :])[..., None]                                     # (l, i, 1): l > i
    P = torch.cumprod(torch.where(later, a[:, None, :], torch.ones_like(a[:, None, :])), 0)
    P = P * (ar[:, None] >= ar[None, :])[..., None]                                    # (j, i, A) P_ji
    carry = torch.einsum("jia,iahd->jahd", P * a[None], step)
    if U is None:
        return carry
    pad = torch.zeros_like(step[:1])
    Un, Wn = torch.cat([U[1:], pad]), torch.cat([W[1:], pad])                         # u_{j+1}, w_{j+1}
    d = torch.cat([step[:1], step[1:] + carry[:-1]])                                   # step_j + carry_{j-1}
    r = (Wn * d).sum((-2, -1))                                                         # (pw, A)
    P_prev = torch.cat([torch.zeros_like(P[:1]), P[:-1]])                              # P_{j-1,i}: 0 for i >= j
    L = P_prev * torch.einsum("jahd,iahd->jia", Wn, Un)                                # (j, i, A) strictly lower
    eye = torch.eye(pw, device=dev, dtype=dt)
    c = torch.linalg.solve_triangular(eye - L.permute(2, 0, 1), r.T[..., None], upper=False)   # (A, pw, 1)
    return carry + torch.einsum("jia,iahd->jahd", P, Un * c.squeeze(-1).T[..., None, None])
