"""The sampler-variant syntax of the benchmarks: `w<window>` then `/`-separated options (eval.bench_rounds'
docstring), e.g. `w48/secant/zero/tol=0.03` -> sample_picard / SamplerConfig keyword arguments."""

from __future__ import annotations


def parse_variant(text: str) -> dict:
    parts = text.split("/")
    if not parts[0].startswith("w"):
        raise ValueError(f"variant {text!r} must start with w<window>, e.g. w16")
    kw: dict = {"window": int(parts[0][1:])}
    for p in parts[1:]:
        if p in ("frontier", "window", "none", "hybrid"):
            kw["guess"] = p
        elif p == "taa":
            kw["accel"] = "taa"
        elif p in ("parareal", "secant"):
            kw["update"] = p
        elif p == "zero":
            kw["start"] = "zero"
        elif p.startswith("first="):
            if not p[len("first="):].isdigit():
                raise ValueError(f"option {p!r} in variant {text!r} needs a window size, e.g. first=16")
            kw["first_window"] = int(p[len("first="):])
        elif "=" in p and p.split("=")[0] in ("tol", "atol"):
            k, v = p.split("=")
            kw[k] = v if (k, v) == ("atol", "auto") else float(v)
        else:
            raise ValueError(f"unknown option {p!r} in variant {text!r}")
    return kw
