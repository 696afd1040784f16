"""Probe (not in the library): carry a step's input change through a frozen-epsilon gain in the low-noise tail.

The parareal / secant updates (sampling/picard.py eq. 2', 2'') carry the change of a step's input with the
frozen-x0 gain a_k = c_x (exact where the data prediction ignores x: the noisy end). At the low-noise end
x0 = x0_a x + x0_b eps follows x, so the frozen-epsilon gain c_x + c_x0 x0_a (~1 there) is the other
natural guess. TG=x0 keeps the library's gain; TG=eps<thr> uses the frozen-epsilon gain on the steps whose
alpha_bar exceeds thr (the low-noise tail). Arguments are eval.bench_rounds'. It patches a private
constructor, so it runs against the commit that added it (docs/samplers.md, "Parareal update").

    TG=eps0.5 python docs/results/tail_gain/tail_gain.py --obs 32 --variants 'w32/parareal,w48/secant/zero'
"""

import os
import sys

import torch

import parapolicy.sampling.picard as picard
from eval.bench_rounds import main

TG = os.environ.get("TG", "x0")
_init = picard._Solve.__init__


def _with_tail_gain(self, sched, traj, z, cond, tol, atol, dev, known=None, gain=None, secant=False):
    if gain is not None and TG.startswith("eps"):
        alpha_bar = sched.signal[:-1].double() ** 2
        eps_gain = (sched.c_x + sched.c_x0 * sched.x0_a).to(gain)
        gain = torch.where((alpha_bar > float(TG[3:] or 0.5)).to(gain.device), eps_gain, gain)
    _init(self, sched, traj, z, cond, tol, atol, dev, known, gain, secant)


picard._Solve.__init__ = _with_tail_gain
print(f"# TG={TG}")
main(sys.argv[1:])
