"""The shared attention module: every backend agrees with an explicit float64 softmax, masks mean what
they say, and attention is permutation-equivariant in the queries."""

import math

import pytest
import torch

from minivid.transformers import Attention, attention, set_attention_backend

F64 = torch.float64
# The triton backend runs compiled on CUDA tensors, or in Triton's CPU interpreter that tests/conftest.py
# turns on for machines without CUDA: both are the real kernels of minivid.kernels.flash_attention.
DEVICE = {"triton": "cuda" if torch.cuda.is_available() else "cpu", "sdpa": "cpu", "math": "cpu"}


def naive(q, k, v, keep=None):
    """softmax(q k^T / sqrt(d)) v with an explicit loop-free float64 computation; keep (B, 1, N_q|1, N_k)."""
    s = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ v.double()


@pytest.mark.parametrize("backend", ["sdpa", "math", "triton"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q, n_k", [(1, 1), (7, 7), (5, 11)])
def test_backends_match_an_explicit_softmax(backend, causal, n_q, n_k):
    g = torch.Generator().manual_seed(n_q * 31 + n_k)
    q, k, v = (torch.randn(2, 3, n, 16, generator=g) for n in (n_q, n_k, n_k))
    kpm = torch.rand(2, n_k, generator=g) > 0.3
    kpm[:, 0] = True
    keep = kpm[:, None, None, :]
    if causal:
        keep = keep & torch.ones(n_q, n_k, dtype=torch.bool).tril()
    dev = DEVICE[backend]
    out = attention(q.to(dev), k.to(dev), v.to(dev), key_padding_mask=kpm.to(dev), causal=causal, backend=backend)
    torch.testing.assert_close(out.cpu().double(), naive(q, k, v, keep), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "math", "triton"])
def test_a_row_with_no_keys_gives_zeros(backend):
    q, k, v = torch.randn(2, 2, 4, 16), torch.randn(2, 2, 5, 16), torch.randn(2, 2, 5, 16)
    kpm = torch.ones(2, 5, dtype=torch.bool)
    kpm[1] = False
    dev = DEVICE[backend]
    out = attention(q.to(dev), k.to(dev), v.to(dev), key_padding_mask=kpm.to(dev), backend=backend).cpu()
    assert torch.isfinite(out).all() and out[1].abs().max() == 0
    torch.testing.assert_close(out[0].double(), naive(q[:1], k[:1], v[:1])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "math", "triton"])
def test_integer_masks_mean_the_same_as_bool_in_every_backend_and_float_masks_are_refused(backend):
    g = torch.Generator().manual_seed(4)
    dev = DEVICE[backend]
    q, k, v = (torch.randn(1, 2, 6, 16, generator=g).to(dev) for _ in range(3))
    kpm = torch.tensor([[1, 1, 0, 1, 0, 1]], device=dev)
    want = attention(q, k, v, key_padding_mask=kpm.bool(), backend=backend)
    for dtype in (torch.uint8, torch.int64):
        torch.testing.assert_close(attention(q, k, v, key_padding_mask=kpm.to(dtype), backend=backend), want)
    with pytest.raises(ValueError, match=r"key_padding_mask must be bool .* got torch.float32"):
        attention(q, k, v, key_padding_mask=kpm.float(), backend=backend)


def test_padding_keys_are_ignored_and_queries_are_permutation_equivariant():
    torch.manual_seed(0)
    attn = Attention(16, heads=4, context_dim=12, qk_norm=True).eval()
    x, ctx = torch.randn(2, 6, 16), torch.randn(2, 9, 12)
    kpm = torch.ones(2, 9, dtype=torch.bool)
    kpm[:, 6:] = False
    out = attn(x, ctx, key_padding_mask=kpm)
    ctx2 = ctx.clone()
    ctx2[:, 6:] = torch.randn(2, 3, 12) * 100  # change only the padding
    torch.testing.assert_close(attn(x, ctx2, key_padding_mask=kpm), out)
    perm = torch.randperm(6)
    torch.testing.assert_close(attn(x[:, perm], ctx, key_padding_mask=kpm), out[:, perm])


def test_module_backends_agree_and_rope_is_applied_to_queries_and_keys():
    torch.manual_seed(1)
    attn = Attention(32, heads=4).eval()
    x = torch.randn(3, 10, 32)
    ref = attn(x)
    set_attention_backend(attn, "math")
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)
    # a "rope" that multiplies q and k by the same constant c scales the logits by c^2
    c = 1.7
    scaled = attn(x, rope=lambda t: t * c)
    attn_scaled = Attention(32, heads=4).eval()
    attn_scaled.load_state_dict(attn.state_dict())
    with torch.no_grad():
        attn_scaled.to_q.weight.mul_(c * c)
        attn_scaled.to_q.bias.mul_(c * c)
    torch.testing.assert_close(scaled, attn_scaled(x), rtol=1e-4, atol=1e-5)


def test_zero_init_output_and_bad_input():
    attn = Attention(8, heads=2, zero_init_out=True)
    assert attn(torch.randn(1, 3, 8)).abs().max() == 0
    with pytest.raises(ValueError, match="backend='flash'"):
        Attention(8, heads=2, backend="flash")
    with pytest.raises(ValueError, match="divisible by heads=3"):
        Attention(8, heads=3)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, N_k\) = \(1, 3\)"):
        attn(torch.randn(1, 3, 8), key_padding_mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"x must be \(B, N, 8\) for this Attention, got shape \(1, 3, 6\)"):
        attn(torch.randn(1, 3, 6))
    with pytest.raises(ValueError, match=r"context must be \(B, N, 8\) for this Attention, got shape \(1, 2, 5\)"):
        attn(torch.randn(1, 3, 8), torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match=r"context of width 5 \(context_dim\): pass context"):
        Attention(8, heads=2, context_dim=5)(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="rope applies to self-attention only"):
        attn(torch.randn(1, 3, 8), torch.randn(1, 2, 8), rope=lambda t: t)
    with pytest.raises(ValueError, match=r"backend='triton' needs a head dim in 16..128, .* head_dim=4"):
        Attention(8, heads=2, backend="triton")
    model = torch.nn.Sequential(Attention(32, heads=2), Attention(8, heads=2))  # head dims 16 and 4
    with pytest.raises(ValueError, match="head_dim=4"):
        set_attention_backend(model, "triton")
    assert [m.backend for m in model] == ["sdpa", "sdpa"]  # checked before any is switched



def test_auto_resolves_to_the_triton_kernel_only_for_cuda_tensors_it_takes():
    """``"auto"``: the Triton kernel for CUDA tensors of a dtype and head dim it takes, SDPA for anything else;
    other backends are themselves (described by stand-ins: no GPU is needed to check the rule)."""
    from types import SimpleNamespace

    from minivid.nn import resolve_backend

    def fake(is_cuda=True, dtype=torch.bfloat16, head_dim=48):
        return SimpleNamespace(is_cuda=is_cuda, dtype=dtype, shape=(2, 4, 10, head_dim))

    assert resolve_backend("auto", fake()) == "triton"
    assert resolve_backend("auto", fake(dtype=torch.float16, head_dim=16)) == "triton"
    assert resolve_backend("auto", fake(dtype=torch.float32, head_dim=128)) == "triton"
    assert resolve_backend("auto", fake(is_cuda=False)) == "sdpa"
    assert resolve_backend("auto", fake(head_dim=8)) == "sdpa"
    assert resolve_backend("auto", fake(head_dim=256)) == "sdpa"
    assert resolve_backend("auto", fake(dtype=torch.float64)) == "sdpa"
    for b in ("sdpa", "math", "triton"):
        assert resolve_backend(b, fake(is_cuda=False)) == b
    with pytest.raises(ValueError, match="backend='flash' is not supported"):
        resolve_backend("flash", fake())
    Attention(8, heads=2, backend="auto")  # head_dim 4: allowed, it runs SDPA


def test_auto_on_the_cpu_is_sdpa_and_leaves_triton_unimported():
    """On CPU tensors "auto" gives SDPA's numbers and never imports Triton (whose first import fixes the interpreter
    switch), checked in a fresh interpreter."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from minivid.nn import attention\n"
        "g = torch.Generator().manual_seed(0)\n"
        "q, k, v = (torch.randn(2, 3, 9, 48, generator=g) for _ in range(3))\n"
        "mask = torch.tensor([[True] * 9, [True] * 4 + [False] * 5])\n"
        "a = attention(q, k, v, key_padding_mask=mask, backend='auto')\n"
        "b = attention(q, k, v, key_padding_mask=mask, backend='sdpa')\n"
        "assert torch.equal(a, b)\n"
        "assert 'triton' not in sys.modules, 'auto imported triton for CPU tensors'\n"
        "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_triton_under_autocast_takes_mixed_dtypes_as_sdpa_does():
    """Under CUDA autocast a QK-norm LayerNorm returns float32 queries and keys while v is bf16; SDPA is cast to the
    autocast dtype, and the triton backend casts the same way instead of refusing mixed dtypes (checked with CPU
    autocast to float16, which the CPU interpreter runs)."""
    if torch.cuda.is_available():
        device, low = "cuda", torch.bfloat16
    else:
        device, low = "cpu", torch.float16
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 2, 12, 16, generator=g).to(device) for _ in range(2))  # float32, as after LayerNorm
    v = torch.randn(2, 2, 12, 16, generator=g).to(device, low)
    mask = torch.tensor([[True] * 12, [True] * 5 + [False] * 7], device=device)
    with pytest.raises(ValueError, match="one dtype"):  # outside autocast mixed dtypes stay an error
        attention(q, k, v, key_padding_mask=mask, backend="triton")
    with torch.autocast(device, dtype=low):
        out = attention(q, k, v, key_padding_mask=mask, backend="triton")
    want = attention(q.to(low).float(), k.to(low).float(), v.float(), key_padding_mask=mask, backend="math")
    assert out.dtype == low and torch.allclose(out.float(), want, atol=2e-2)


def test_a_compiled_module_runs_the_triton_kernel_outside_the_graph():
    """torch.compile cannot trace the kernel's Python launcher (here Triton's interpreter; on CUDA its autotuner),
    so the triton backend is excluded from tracing: a compiled Attention gives the eager numbers and gradients."""
    device = DEVICE["triton"]
    torch.manual_seed(0)
    a = Attention(32, heads=2, backend="triton").to(device)
    x = torch.randn(2, 10, 32, device=device, requires_grad=True)
    ref = a(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch._dynamo.reset()
    out = torch.compile(a, backend="eager")(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out, ref) and torch.equal(g, g_ref)
