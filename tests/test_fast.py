"""The fast inference path (parapolicy.fast) against the eager ConditionalUnet1D, on random weights."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from parapolicy.fast import (
    FastUnet1D,
    compare_latency,
    has_fast_bf16,
    measure_latency_curve,
    optimize_denoiser,
)
from parapolicy.fast import layers as L
from parapolicy.fast import optimize as optimize_module
from parapolicy.model import ConditionalUnet1D

SHIPPED = dict(input_dim=2, global_cond_dim=40, down_dims=(64, 128, 256), kernel_size=5,
               diffusion_step_embed_dim=256)
CONFIGS = {
    "shipped": SHIPPED,
    "scale_film": dict(input_dim=2, global_cond_dim=20, down_dims=(32, 64, 128), kernel_size=5,
                       diffusion_step_embed_dim=64, cond_predict_scale=True),
    # inpainting (real-stanford obs_as_global_cond=False): actions and observations in one sample, no cond
    "inpainting": dict(input_dim=2 + 20, global_cond_dim=None, down_dims=(32, 64, 128), kernel_size=3,
                       diffusion_step_embed_dim=64, n_groups=4),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models: one torch thread is faster, and far faster on a CPU shared with other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def make_model(seed: int = 0, **kw) -> ConditionalUnet1D:
    """Random UNet whose GroupNorm affine and every bias are randomised too (defaults are 1 / 0)."""
    torch.manual_seed(seed)
    model = ConditionalUnet1D(**kw).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
            elif p.ndim == 1:  # GroupNorm weight
                p.uniform_(0.5, 1.5)
    return model


def reference_forward(model, sample, timestep, local_cond=None, global_cond=None):
    """Channels-first eager forward using the model's own submodules, with upstream diffusion_policy's
    local_cond rule: only the first local encoder's output is added (after the first down block)."""
    x = sample.transpose(1, 2)
    t = torch.as_tensor(timestep).reshape(-1).expand(sample.shape[0])
    feature = model.diffusion_step_encoder(t)
    if global_cond is not None:
        feature = torch.cat([feature, global_cond], dim=-1)
    h0 = model.local_cond_encoder[0](local_cond.transpose(1, 2), feature) if local_cond is not None else None
    skips = []
    for i, (res1, res2, down) in enumerate(model.down_modules):
        x = res1(x, feature)
        if i == 0 and h0 is not None:
            x = x + h0
        x = res2(x, feature)
        skips.append(x)
        x = down(x)
    for mid in model.mid_modules:
        x = mid(x, feature)
    for res1, res2, up in model.up_modules:
        x = up(res2(res1(torch.cat((x, skips.pop()), dim=1), feature), feature))
    return model.final_conv(x).transpose(1, 2)


# --- packed primitives -------------------------------------------------------------------------------

PREPACK = [False] + ([True] if L.prepack_works(torch.float32) else [])


def packed(w, b, prepack):
    p = L.Packed(w, b, torch.float32)
    if prepack:
        p.prepack()
    return p


@pytest.mark.parametrize("prepack", PREPACK)
@pytest.mark.parametrize("k,stride", [(1, 1), (3, 1), (5, 1), (3, 2)])
def test_packed_conv_matches_conv1d(k, stride, prepack):
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 10, k, stride=stride, padding=k // 2)
    x = torch.randn(3, 16, 6)
    mm = packed(*L.pack_conv(conv), prepack)
    with torch.no_grad():
        ref = conv(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(L.conv(x, mm, k, stride), ref, atol=1e-5)


@pytest.mark.parametrize("prepack", PREPACK)
def test_packed_upsample_matches_conv_transpose(prepack):
    torch.manual_seed(0)
    convt = nn.ConvTranspose1d(6, 6, 4, 2, 1)
    x = torch.randn(3, 8, 6)
    mm = packed(*L.pack_upsample(convt), prepack)
    with torch.no_grad():
        ref = convt(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(L.upsample(x, mm), ref, atol=1e-5)


def test_conv_with_residual_and_group_norm_mish():
    torch.manual_seed(0)
    conv, res = nn.Conv1d(6, 8, 5, padding=2), nn.Conv1d(6, 8, 1)
    gn = nn.GroupNorm(4, 8)
    nn.init.uniform_(gn.weight, 0.5, 1.5)
    nn.init.normal_(gn.bias)
    x = torch.randn(2, 16, 6)
    y = L.conv(x, packed(*L.pack_conv_with_residual(conv, res), False), 5)
    with torch.no_grad():
        xc = x.transpose(1, 2)
        assert torch.allclose(y[..., :8], conv(xc).transpose(1, 2), atol=1e-5)
        assert torch.allclose(y[..., 8:], res(xc).transpose(1, 2), atol=1e-5)
        ref = nn.functional.mish(gn(conv(xc))).transpose(1, 2)
    assert torch.allclose(L.group_norm_mish(y[..., :8], 4, gn.weight, gn.bias, gn.eps), ref, atol=1e-5)


# --- the whole UNet, float32 ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,batch,prepack,impl", [(n, b, None, "auto") for n in CONFIGS for b in (1, 3, 8)]
                         + [(n, 3, False, "im2col") for n in CONFIGS]
                         + [(n, 2, None, "im2col") for n in CONFIGS]
                         + [(n, 5, None, "conv2d") for n in CONFIGS])
def test_float32_matches_eager(name, batch, prepack, impl):
    kw = CONFIGS[name]
    model = make_model(**kw)
    fast = optimize_denoiser(model, prepack=prepack, conv_impl=impl, cache=False)
    assert fast.core.prepacked == (prepack is None and L.prepack_works(torch.float32))
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 16, kw["input_dim"], generator=g)
    t = torch.randint(0, 100, (batch,), generator=g)
    gc = torch.randn(batch, kw["global_cond_dim"], generator=g) if kw["global_cond_dim"] else None
    with torch.no_grad():
        ref = model(x, t, global_cond=gc)
    out = fast(x, t, global_cond=gc)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert rel_err(out, ref) < 1e-4


@pytest.mark.parametrize("timestep", [7, torch.tensor(7), torch.tensor([7])])
def test_scalar_timestep_forms(timestep):
    model = make_model(**CONFIGS["scale_film"])
    fast = optimize_denoiser(model, cache=False)
    x, gc = torch.randn(4, 16, 2), torch.randn(4, 20)
    with torch.no_grad():
        ref = model(x, torch.full((4,), 7), global_cond=gc)
    assert rel_err(fast(x, timestep, global_cond=gc), ref) < 1e-4
    assert rel_err(fast(x, timestep, None, gc), ref) < 1e-4  # positional local_cond, global_cond


@pytest.mark.parametrize("batch", [1, 5])
def test_local_cond_matches_reference(batch):
    kw = dict(input_dim=3, local_cond_dim=4, global_cond_dim=10, down_dims=(32, 64, 128), kernel_size=5,
              diffusion_step_embed_dim=64, cond_predict_scale=True)
    model = make_model(**kw)
    fast = optimize_denoiser(model, conv_impl="im2col" if batch == 1 else "auto", cache=False)
    x, lc, gc = torch.randn(batch, 16, 3), torch.randn(batch, 16, 4), torch.randn(batch, 10)
    t = torch.randint(0, 100, (batch,))
    with torch.no_grad():
        ref = reference_forward(model, x, t, local_cond=lc, global_cond=gc)
        no_lc = reference_forward(model, x, t, global_cond=gc)
    out = fast(x, t, local_cond=lc, global_cond=gc)
    assert rel_err(out, ref) < 1e-4
    assert rel_err(out, no_lc) > 1e-3  # the local condition does change the output


def test_inference_only_and_no_grad():
    model = make_model(**CONFIGS["scale_film"])
    fast = optimize_denoiser(model, cache=False)
    x = torch.randn(2, 16, 2, requires_grad=True)
    out = fast(x, 3, global_cond=torch.randn(2, 20))
    assert not out.requires_grad
    assert all(not b.requires_grad for b in fast.buffers())


# --- bf16 and its hardware check -------------------------------------------------------------------------

def test_bf16_close_to_float32_where_supported():
    model = make_model(**SHIPPED)
    x, t, gc = torch.randn(4, 16, 2), torch.randint(0, 100, (4,)), torch.randn(4, 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = optimize_denoiser(model, dtype=torch.bfloat16, cache=False)
    out = fast(x, t, global_cond=gc)
    with torch.no_grad():
        ref = model(x, t, global_cond=gc)
    assert out.dtype == torch.float32
    for impl in ("im2col", "conv2d"):
        plain = optimize_denoiser(model, dtype=torch.bfloat16, prepack=False, conv_impl=impl, cache=False)
        assert rel_err(plain(x, t, global_cond=gc), ref) < 5e-2
    if has_fast_bf16("cpu"):
        assert fast.dtype == torch.bfloat16 and not caught
        assert rel_err(out, ref) < 5e-2
    else:
        assert fast.dtype == torch.float32 and any("bfloat16" in str(w.message) for w in caught)
        assert rel_err(out, ref) < 1e-4


def test_bf16_falls_back_to_float32_with_warning(monkeypatch):
    monkeypatch.setattr(optimize_module, "has_fast_bf16", lambda device="cpu": False)
    model = make_model(**CONFIGS["scale_film"])
    with pytest.warns(RuntimeWarning, match="bfloat16"):
        fast = optimize_denoiser(model, dtype=torch.bfloat16, cache=False)
    assert fast.dtype == torch.float32


def test_has_fast_bf16_agrees_with_the_cpu_flags():
    """True exactly when the CPU advertises bf16 matrix units (AMX-BF16 or AVX512-BF16) and oneDNN can use
    them; never on devices without them."""
    import pathlib

    info = pathlib.Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo on this OS to compare with")
    flags = set(info.read_text().split())
    advertised = bool({"amx_bf16", "avx512_bf16"} & flags)
    assert has_fast_bf16("cpu") == (advertised and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert has_fast_bf16("meta") is False


# --- cache and bad input -------------------------------------------------------------------------------

def test_cache_returns_same_module_until_weights_change():
    model = make_model(**CONFIGS["scale_film"])
    a = optimize_denoiser(model)
    assert optimize_denoiser(model) is a
    assert optimize_denoiser(model, dtype=torch.float32, compile=False) is a
    x, gc = torch.randn(2, 16, 2), torch.randn(2, 20)
    with torch.no_grad():
        model.final_conv[1].bias.add_(1.0)
        ref = model(x, 5, global_cond=gc)
    b = optimize_denoiser(model)
    assert b is not a
    assert rel_err(b(x, 5, global_cond=gc), ref) < 1e-4


def test_bad_inputs_raise_value_error():
    model = make_model(**CONFIGS["scale_film"])
    with pytest.raises(ValueError, match="dtype"):
        optimize_denoiser(model, dtype=torch.float16)
    with pytest.raises(ValueError, match="dtype"):
        optimize_denoiser(model, dtype="half")
    assert optimize_denoiser(model, dtype="fp32").dtype == torch.float32
    with pytest.raises(ValueError, match="ConditionalUnet1D"):
        FastUnet1D(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cuda_graphs"):
        optimize_denoiser(model, cuda_graphs=True)
    with pytest.raises(ValueError, match="conv_impl"):
        optimize_denoiser(model, conv_impl="winograd")
    with pytest.raises(ValueError, match="prepack"):
        optimize_denoiser(model, compile=True, prepack=True)
    fast = optimize_denoiser(model)
    with pytest.raises(ValueError, match="timestep"):
        fast(torch.randn(3, 16, 2), torch.tensor([1, 2]), global_cond=torch.randn(3, 20))
    with pytest.raises(ValueError, match="sample"):
        fast(torch.randn(16, 2), 1, global_cond=torch.randn(1, 20))
    with pytest.raises(ValueError, match="local_cond"):
        fast(torch.randn(1, 16, 2), 1, local_cond=torch.randn(1, 16, 2), global_cond=torch.randn(1, 20))


# --- latency curve (generic callable) ----------------------------------------------------------------------

def test_latency_curve_of_any_callable():
    calls = []

    def dummy(sample, timestep, local_cond=None, global_cond=None):  # closed-form denoiser
        calls.append(sample.shape[0])
        return sample * 0.5 + global_cond.mean(-1)[:, None, None]

    curve = measure_latency_curve(dummy, horizon=16, action_dim=2, global_cond_dim=3, batch_sizes=(1, 4),
                                  warmup=1, repeats=3)
    assert sorted(curve) == [1, 4] and all(isinstance(v, float) and v > 0 for v in curve.values())
    assert calls.count(1) == 4 and calls.count(4) == 4  # 1 warm-up + 3 timed each
    samples: dict = {}
    both = compare_latency({"a": dummy, "b": dummy}, horizon=8, action_dim=2, global_cond_dim=3,
                           batch_sizes=(2,), warmup=0, repeats=2, samples=samples)
    assert set(both) == {"a", "b"} and len(samples["a"][2]["wall"]) == len(samples["b"][2]["process"]) == 2
    cpu = measure_latency_curve(dummy, horizon=8, action_dim=2, global_cond_dim=3, batch_sizes=(2,),
                                clock="process")
    assert cpu[2] >= 0
    sampler_style = measure_latency_curve(lambda x, t, c: dummy(x, t, global_cond=c), horizon=8, action_dim=2,
                                          global_cond_dim=3, batch_sizes=(1, 2), contract="sampler")
    assert sorted(sampler_style) == [1, 2]
    with pytest.raises(ValueError, match="batch"):
        measure_latency_curve(dummy, horizon=16, action_dim=2, batch_sizes=(0,))
    with pytest.raises(ValueError, match="contract"):
        measure_latency_curve(dummy, horizon=16, action_dim=2, contract="other")


# --- optional: compile, CUDA graphs ----------------------------------------------------------------------

@pytest.mark.slow
def test_compiled_matches_eager_and_reports_compile_time():
    kw = dict(input_dim=2, global_cond_dim=4, down_dims=(8, 16), kernel_size=3, diffusion_step_embed_dim=8,
              n_groups=2)
    model = make_model(**kw)
    fast = optimize_denoiser(model, compile=True)
    x, gc = torch.randn(2, 8, 2), torch.randn(2, 4)
    with torch.no_grad():
        ref = model(x, 3, global_cond=gc)
    assert rel_err(fast(x, 3, global_cond=gc), ref) < 1e-4
    assert list(fast.compile_seconds.values())[0] > 0
    assert optimize_denoiser(model, compile=True) is fast


def test_failed_compile_falls_back_with_warning():
    model = make_model(**CONFIGS["scale_film"])
    fast = optimize_denoiser(model, cache=False)
    x, gc = torch.randn(2, 16, 2), torch.randn(2, 20)
    ref = fast(x, 4, global_cond=gc)

    class Broken(nn.Module):  # what a failing torch.compile wrapper looks like
        def forward(self, *args):
            raise RuntimeError("simulated compiler failure")

    fast.compiled, fast._run = True, Broken()
    with pytest.warns(RuntimeWarning, match="simulated compiler failure"):
        out = fast(x, 4, global_cond=gc)
    assert torch.equal(out, ref) and fast.compiled is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_match_eager():
    from parapolicy.fast.cuda_graphs import CUDAGraphDenoiser

    model = make_model(**CONFIGS["scale_film"]).cuda()
    fast = optimize_denoiser(model, cache=False)
    assert isinstance(fast, CUDAGraphDenoiser)
    for batch in (1, 4, 4):
        x, gc = torch.randn(batch, 16, 2, device="cuda"), torch.randn(batch, 20, device="cuda")
        t = torch.randint(0, 100, (batch,), device="cuda")
        with torch.no_grad():
            ref = model(x, t, global_cond=gc)
        assert rel_err(fast(x, t, global_cond=gc), ref) < 1e-3  # TF32 may be on
    assert len(fast.graphs) == 2


def test_latency_curve_is_the_cost_models_measure():
    """fast.latency measures as sampling.cost does: per batch the fastest call, made non-decreasing."""
    from parapolicy.sampling.cost import fastest_curve

    assert fastest_curve({1: [3.0, 2.0], 2: [1.5, 4.0], 4: [5.0, 6.0]}) == {1: 2.0, 2: 2.0, 4: 5.0}

    def dummy(sample, timestep, local_cond=None, global_cond=None):
        return sample * 0.5

    samples: dict = {}
    curves = compare_latency({"a": dummy, "b": dummy}, horizon=8, action_dim=2, batch_sizes=(1, 2, 4),
                             warmup=0, repeats=3, samples=samples)
    for name in ("a", "b"):
        assert curves[name] == fastest_curve({b: samples[name][b]["wall"] for b in (1, 2, 4)})
        assert curves[name][1] <= curves[name][2] <= curves[name][4]
