"""Tests of minivid.kernels.flash (K1-K3): the Triton FlashAttention-2 kernels, launched through
``flash_attention``, against the math path.

On a machine without CUDA the kernels run in Triton's interpreter (see conftest.py), which is slow,
so the shapes are small but many: every case draws fresh random inputs from its own seed, compares
the forward output and all three gradients with ``attention_reference`` computed in float64, and runs
with every kernel output buffer poisoned (NaN) first (conftest.py), so that an element a kernel forgets to write
fails the comparison. Tests named ``gpu`` need CUDA and are skipped without it (``bench/gpu_session.sh`` runs them
with ``-k gpu``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from minivid.kernels import (
    KernelConfig,
    attention_reference,
    flash_attention,
    flash_attention_forward,
    interpreter_active,
    kernel_config,
    last_configs,
)
from minivid.kernels.flash import _new, _stride_align

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = interpreter_active()
RTOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Tilings exercised in the interpreter: square and rectangular tiles, and several (b, h) rows per
# program (rows > 1, with B·H not always a multiple of rows).
TILINGS = (
    KernelConfig(16, 16),
    KernelConfig(32, 16),
    KernelConfig(16, 32, rows=2),
    KernelConfig(32, 32, rows=3),
    KernelConfig(64, 32),
)
N_CHOICES = (1, 2, 3, 5, 7, 13, 16, 17, 23, 31, 32, 37, 48, 61)  # 1, primes, non-multiples of blocks


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    seed: int
    B: int
    H: int
    n_q: int
    n_k: int
    D: int
    causal: bool
    mask: str  # "none" | "random" | "empty" (one batch element with every key masked)
    layout: str
    dtype: torch.dtype = torch.float32
    fwd: KernelConfig = TILINGS[0]
    dq: KernelConfig = TILINGS[0]
    dkdv: KernelConfig = TILINGS[0]

    def __str__(self):
        t = lambda c: f"{c.block_m}x{c.block_n}r{c.rows}"  # noqa: E731
        dt = str(self.dtype).replace("torch.", "")
        return (f"s{self.seed}-B{self.B}H{self.H}-Nq{self.n_q}Nk{self.n_k}-D{self.D}-{'causal' if self.causal else 'full'}"
                f"-mask_{self.mask}-{self.layout}-{dt}-fwd{t(self.fwd)}-dq{t(self.dq)}-dkdv{t(self.dkdv)}")


def _random_case(seed: int) -> Case:
    g = torch.Generator().manual_seed(1000 + seed)
    pick = lambda xs: xs[int(torch.randint(len(xs), (1,), generator=g))]  # noqa: E731
    n_q = pick(N_CHOICES)
    n_k = n_q if torch.rand(1, generator=g) < 0.6 else pick(N_CHOICES)  # self- or cross-attention
    return Case(seed=seed, B=pick((1, 2, 3)), H=pick((1, 2, 3)), n_q=n_q, n_k=n_k,
                D=pick((16, 24, 32, 32, 40, 64, 72, 128)), causal=bool(torch.rand(1, generator=g) < 0.5),
                mask=pick(("none", "random", "random", "empty")), layout=pick(("bhnd", "bnhd")),
                fwd=pick(TILINGS), dq=pick(TILINGS), dkdv=pick(TILINGS))


def _make_inputs(case: Case):
    g = torch.Generator().manual_seed(case.seed)
    shape = lambda n: (case.B, case.H, n, case.D) if case.layout == "bhnd" else (case.B, n, case.H, case.D)  # noqa: E731
    q = torch.randn(shape(case.n_q), generator=g)
    k = torch.randn(shape(case.n_k), generator=g)
    v = torch.randn(shape(case.n_k), generator=g)
    do = torch.randn(shape(case.n_q), generator=g)
    kpm = None
    if case.mask != "none":
        kpm = torch.rand(case.B, case.n_k, generator=g) < 0.7
        if case.mask == "empty":
            kpm[0] = False  # every query of batch element 0 sees no key: output and gradients 0
    to = lambda t: t.to(DEVICE, case.dtype)  # noqa: E731
    return to(q), to(k), to(v), to(do), (None if kpm is None else kpm.to(DEVICE))


def _assert_close(actual, expected, rtol, name):
    """max |actual − expected| <= rtol · max(max |expected|, 1): relative to the tensor's scale."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: {(~torch.isfinite(actual)).sum()} non-finite elements"
    err = (actual.double() - expected.double()).abs().max().item()
    bound = rtol * max(expected.abs().max().item(), 1.0)
    assert err <= bound, f"{name}: max abs error {err:.3e} > {bound:.3e}"


def _run_and_compare(case: Case):
    q, k, v, do, kpm = _make_inputs(case)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    with kernel_config(fwd=case.fwd, dq=case.dq, dkdv=case.dkdv):
        o = flash_attention(q, k, v, causal=case.causal, key_padding_mask=kpm, layout=case.layout)
        dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    o64 = attention_reference(q64, k64, v64, causal=case.causal, key_padding_mask=kpm, layout=case.layout)
    dq64, dk64, dv64 = torch.autograd.grad(o64, (q64, k64, v64), do.double())
    rtol = RTOL[case.dtype]
    for name, a, e in (("O", o, o64), ("dQ", dq, dq64), ("dK", dk, dk64), ("dV", dv, dv64)):
        _assert_close(a, e, rtol, f"{case} {name}")
    return o, (dq, dk, dv)


# --------------------------------------------------------------------------------------------------
# Forward and backward against the float64 math path (K1, K2, K3)
# --------------------------------------------------------------------------------------------------

RANDOM_CASES = [_random_case(s) for s in range(160)]


@pytest.mark.parametrize("case", RANDOM_CASES, ids=str)
def test_random_case_matches_float64_reference(case):
    """K1-K3: random B, H, N_q, N_k, D, causal, masks, layouts and tilings."""
    _run_and_compare(case)


@pytest.mark.parametrize("n", (1, 2, 3, 15, 16, 17, 31, 33, 47, 64, 97))
@pytest.mark.parametrize("causal", (False, True), ids=("full", "causal"))
def test_sequence_lengths(n, causal):
    """K2: any N, including 1, primes and lengths just off a multiple of the 16- and 32-wide tiles."""
    tiling = KernelConfig(32, 16) if n % 2 else KernelConfig(16, 32)
    _run_and_compare(Case(seed=n, B=1, H=2, n_q=n, n_k=n, D=32, causal=causal, mask="none", layout="bhnd",
                          fwd=tiling, dq=tiling, dkdv=tiling))


HEAD_DIMS = (16, 17, 24, 32, 40, 48, 64, 72, 80, 96, 100, 127, 128)  # powers of two and the padded ones


@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("layout", ("bhnd", "bnhd"))
def test_head_dims_and_layouts(D, layout):
    """Any head dim in 16..128: one that is not a power of two is padded to the next one in the kernels' tiles,
    its padding lanes masked on every load and store (poisoned outputs show a lane written past D)."""
    _run_and_compare(Case(seed=D, B=2, H=2, n_q=19, n_k=19, D=D, causal=False, mask="random", layout=layout))


@pytest.mark.parametrize("D", (24, 72, 100))
def test_padded_head_dims_in_packed_qkv_and_the_short_backward(D):
    """Padded head dims where a stray lane would read a neighbour: q, k, v sliced out of one packed
    (B, N, 3, H, D) tensor (the lanes past D of q are k's), through the one-kernel short backward."""
    g = torch.Generator().manual_seed(D)
    qkv = torch.randn(2, 13, 3, 2, D, generator=g).to(DEVICE).requires_grad_()
    do = torch.randn(2, 13, 2, D, generator=g).to(DEVICE)
    with kernel_config(fwd=KernelConfig(16, 16), dkdv=KernelConfig(16, 16)):
        o = flash_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True, layout="bnhd")
        (grad,) = torch.autograd.grad(o, qkv, do)
    assert "bwd_short" in last_configs()
    ref = qkv.detach().double().requires_grad_()
    o64 = attention_reference(ref[:, :, 0], ref[:, :, 1], ref[:, :, 2], causal=True, layout="bnhd")
    (grad64,) = torch.autograd.grad(o64, ref, do.double())
    _assert_close(o, o64, RTOL[torch.float32], "O")
    _assert_close(grad, grad64, RTOL[torch.float32], "d(qkv)")


def test_stride_alignment_hint_only_where_it_holds():
    """The ALIGN hint tells the GPU compiler that rows start 16-byte aligned: given only when every tensor starts
    at a multiple of 16 bytes and every (b, h, n) stride is a multiple of 16 bytes, and not needed when Triton
    sees strides that are multiples of 16 elements by itself."""
    def x(D, dtype=torch.float16, n=8):
        return torch.zeros(2, 3, n, D, dtype=dtype)

    assert _stride_align("bhnd", x(64), x(64)) == 1  # Triton marks these itself
    assert _stride_align("bhnd", x(72), x(72)) == 16  # 144-byte rows
    assert _stride_align("bhnd", x(72, torch.float32)) == 16  # 288-byte rows
    assert _stride_align("bhnd", x(20)) == 1  # 40-byte rows: not 16-byte aligned
    assert _stride_align("bhnd", x(73, n=16)[..., 1:]) == 1  # starts 2 bytes into its storage
    assert _stride_align("bhnd", x(152)[..., :144]) == 16  # D = 144 would be too wide; the strides are what counts
    assert _stride_align("bhnd", x(152)[..., :144:2]) == 1  # D = 72 at head-dim stride 2: rows are not contiguous
    packed = torch.zeros(2, 8, 3, 4, 72, dtype=torch.float16)  # q, k, v of a packed (B, N, 3, H, D) tensor
    assert _stride_align("bnhd", packed[:, :, 0], packed[:, :, 1], packed[:, :, 2]) == 16


@pytest.mark.parametrize("n_q,n_k", ((5, 29), (29, 5), (1, 17), (17, 1)))
@pytest.mark.parametrize("causal", (False, True), ids=("full", "causal"))
def test_cross_attention_lengths(n_q, n_k, causal):
    """N_q != N_k, causal mask top-left aligned as SDPA's is_causal."""
    _run_and_compare(Case(seed=n_q * 100 + n_k, B=2, H=1, n_q=n_q, n_k=n_k, D=16, causal=causal,
                          mask="random", layout="bnhd"))


@pytest.mark.parametrize("rows,bh", ((2, 3), (4, 5), (8, 6)))
def test_several_rows_per_program(rows, bh):
    """Short sequences pack `rows` (batch, head) pairs per program; B·H need not be a multiple."""
    cfg = KernelConfig(16, 16, rows=rows)
    _run_and_compare(Case(seed=rows, B=bh, H=1, n_q=11, n_k=11, D=32, causal=True, mask="random",
                          layout="bnhd", fwd=cfg, dq=cfg, dkdv=cfg))


@pytest.mark.parametrize("n_q,n_k,causal,mask,rows,dtype", (
    (11, 11, True, "random", 1, torch.float32), (16, 16, False, "empty", 2, torch.float32),
    (7, 29, True, "random", 3, torch.float32), (29, 7, False, "none", 1, torch.float32),
    (1, 1, False, "none", 4, torch.float32), (23, 23, True, "random", 2, torch.float16),
))
def test_short_sequences_take_the_one_kernel_backward(n_q, n_k, causal, mask, rows, dtype):
    """K3 for sequences one tile covers: one kernel computes dQ, dK and dV (no pre-pass, no dQ kernel); it
    matches the float64 reference and the three-kernel path (tiles that do not cover N) on the same inputs."""
    fused, split = KernelConfig(32, 32, rows=rows), KernelConfig(16, 16, rows=rows)
    case = Case(seed=n_q * 31 + n_k, B=3, H=2, n_q=n_q, n_k=n_k, D=32, causal=causal, mask=mask, layout="bnhd",
                dtype=dtype, fwd=fused, dq=fused, dkdv=fused)
    o1, g1 = _run_and_compare(case)
    assert "bwd_short" in last_configs() and "dq" not in last_configs() and "dkdv" not in last_configs()
    if max(n_q, n_k) > 16:
        o2, g2 = _run_and_compare(dataclasses.replace(case, dq=split, dkdv=split))
        assert "bwd_short" not in last_configs() and {"dq", "dkdv"} <= set(last_configs())
        for a, b in zip(g1, g2):
            _assert_close(a, b, RTOL[dtype], "one-kernel vs three-kernel backward")


def test_long_sequences_never_take_the_one_kernel_backward():
    """N > 64 keeps the split backward even when a (large) tile would cover it."""
    cfg = KernelConfig(128, 128)
    _run_and_compare(Case(seed=65, B=1, H=1, n_q=65, n_k=65, D=16, causal=True, mask="random", layout="bhnd",
                          fwd=cfg, dq=cfg, dkdv=cfg))
    assert "bwd_short" not in last_configs() and {"dq", "dkdv"} <= set(last_configs())


@pytest.mark.parametrize("seed", range(4))
def test_float16(seed):
    """fp16 inputs (fp32 accumulation) within about 1e-2 of the float64 reference."""
    case = _random_case(100 + seed)
    _run_and_compare(dataclasses.replace(case, dtype=torch.float16))


# --------------------------------------------------------------------------------------------------
# Conventions: masks, layouts without copies, log-sum-exp, determinism
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", (False, True), ids=("full", "causal"))
def test_fully_masked_rows_return_zeros_like_sdpa(causal):
    """A query whose keys are all masked returns 0 with zero gradients, as torch SDPA does."""
    g = torch.Generator().manual_seed(7)
    B, H, n, D = 2, 2, 9, 16
    q, k, v = (torch.randn(B, H, n, D, generator=g).to(DEVICE).requires_grad_() for _ in range(3))
    kpm = torch.ones(B, n, dtype=torch.bool)
    kpm[0] = False  # batch 0: every key is padding
    kpm[1, 0] = False  # batch 1 + causal: query 0 sees only key 0, which is padding
    kpm = kpm.to(DEVICE)
    o = flash_attention(q, k, v, causal=causal, key_padding_mask=kpm)
    o.sum().backward()
    assert torch.isfinite(o).all() and (o[0] == 0).all()
    assert (q.grad[0] == 0).all() and (k.grad[0] == 0).all() and (v.grad[0] == 0).all()
    if causal:
        assert (o[1, :, 0] == 0).all() and (q.grad[1, :, 0] == 0).all()
    # torch SDPA (float64 math path) with the same boolean mask, True = keep.
    attn_mask = kpm[:, None, None, :]
    if causal:
        attn_mask = attn_mask & torch.ones(n, n, dtype=torch.bool, device=DEVICE).tril()
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=attn_mask)
    _assert_close(o.detach(), ref.detach(), RTOL[torch.float32], "O vs SDPA")


@pytest.mark.parametrize("n_q,n_k", ((6, 6), (4, 11), (11, 4)))
def test_causal_matches_sdpa_is_causal(n_q, n_k):
    g = torch.Generator().manual_seed(n_q + n_k)
    q = torch.randn(1, 2, n_q, 32, generator=g).to(DEVICE)
    k, v = (torch.randn(1, 2, n_k, 32, generator=g).to(DEVICE) for _ in range(2))
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    _assert_close(flash_attention(q, k, v, causal=True), ref, RTOL[torch.float32], "O vs SDPA is_causal")


def test_packed_qkv_views_are_used_without_copies(monkeypatch):
    """(B, N, 3, H, D) packed projections: q, k, v are strided bnhd views, read in place."""
    g = torch.Generator().manual_seed(3)
    B, n, H, D = 2, 13, 3, 32
    qkv = torch.randn(B, n, 3, H, D, generator=g).to(DEVICE)
    q, k, v = qkv.unbind(dim=2)  # each (B, N, H, D), not contiguous
    assert not q.is_contiguous()

    def no_copies(self, *args, **kwargs):
        raise AssertionError("flash_attention made a contiguous copy")

    monkeypatch.setattr(torch.Tensor, "contiguous", no_copies)
    o = flash_attention(q, k, v, layout="bnhd")
    monkeypatch.undo()
    assert o.shape == (B, n, H, D)
    ref = attention_reference(q.double(), k.double(), v.double(), layout="bnhd")
    _assert_close(o, ref, RTOL[torch.float32], "O")


def test_bnhd_equals_bhnd():
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 3, 21, 16, generator=g).to(DEVICE) for _ in range(3))
    o1 = flash_attention(q, k, v, causal=True)
    o2 = flash_attention(*(t.transpose(1, 2) for t in (q, k, v)), causal=True, layout="bnhd")
    assert o2.shape == (2, 21, 3, 16)
    torch.testing.assert_close(o1, o2.transpose(1, 2), rtol=0, atol=0)


def test_log_sum_exp_is_saved():
    """K2: the forward saves lse = m + log l per query row (+inf where every key is masked)."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, 23, 32, generator=g).to(DEVICE) for _ in range(3))
    kpm = (torch.rand(2, 23, generator=g) < 0.6).to(DEVICE)
    kpm[1] = False
    o, lse = flash_attention_forward(q, k, v, causal=True, key_padding_mask=kpm)
    o64, lse64 = attention_reference(q.double(), k.double(), v.double(), causal=True, key_padding_mask=kpm,
                                     return_lse=True)
    assert lse.shape == (2, 2, 23)
    assert torch.equal(torch.isinf(lse), torch.isinf(lse64))
    fin = torch.isfinite(lse64)
    _assert_close(lse[fin], lse64[fin], RTOL[torch.float32], "lse")


def test_deterministic():
    """No atomics: two runs give bit-identical outputs and gradients."""
    case = _random_case(3)
    o1, g1 = _run_and_compare(case)
    o2, g2 = _run_and_compare(case)
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_poisoned_outputs_fill_buffers():
    assert torch.isnan(_new((3, 4), torch.float32, "cpu")).all()  # conftest.py's autouse fixture is active


def test_custom_scale():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 1, 10, 16, generator=g).to(DEVICE) for _ in range(3))
    ref = attention_reference(q.double(), k.double(), v.double(), scale=0.3)
    _assert_close(flash_attention(q, k, v, scale=0.3), ref, RTOL[torch.float32], "O")


# --------------------------------------------------------------------------------------------------
# Clear errors before any work
# --------------------------------------------------------------------------------------------------


def _qkv(shape=(1, 2, 4, 16), dtype=torch.float32, device=DEVICE):
    return tuple(torch.randn(shape, dtype=dtype, device=device) for _ in range(3))


@pytest.mark.parametrize("D", (1, 8, 15, 129, 256))
def test_unsupported_head_dim(D):
    q, k, v = _qkv((1, 2, 4, D))
    with pytest.raises(ValueError, match=rf"head_dim must be in 16..128, got head_dim={D} \(q \(1, 2, 4, {D}\)"):
        flash_attention(q, k, v)


def test_bad_scale_and_kernel_config():
    q, k, v = _qkv()
    for bad in ("abc", [1.0], True):
        with pytest.raises(TypeError, match=r"scale must be a real number .* got"):
            flash_attention(q, k, v, scale=bad)
    with pytest.raises(ValueError, match="scale must be finite, got inf"):
        flash_attention(q, k, v, scale=float("inf"))
    ref = flash_attention(q, k, v, scale=0.5)
    torch.testing.assert_close(flash_attention(q, k, v, scale=torch.tensor(0.5)), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"block_m=24 must be a power of two >= 16"):
        KernelConfig(24, 16)
    with pytest.raises(ValueError, match=r"block_n=8 must be a power of two >= 16"):
        KernelConfig(16, 8)
    with pytest.raises(ValueError, match="rows=0 must be a positive integer"):
        KernelConfig(16, 16, rows=0)
    with pytest.raises(ValueError, match="num_warps=3 must be a power of two"):
        KernelConfig(16, 16, num_warps=3)


def test_second_derivatives_are_refused_not_silently_wrong():
    """The backward kernels are first-order: differentiating dQ (a gradient penalty) raises instead of
    returning a gradient that lacks the penalty's term."""
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(1, 1, 5, 16, generator=g).to(DEVICE).requires_grad_() for _ in range(3))
    o = flash_attention(q, k, v)
    (dq,) = torch.autograd.grad(o.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        (o.sum() + dq.square().sum()).backward()


def test_mismatched_shapes():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="agree in batch, heads and head dim"):
        flash_attention(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        flash_attention(q, k, v[:, :, :3])
    with pytest.raises(ValueError, match="must be 4-D"):
        flash_attention(q[0], k[0], v[0])


def test_mismatched_dtypes_and_unsupported_dtype():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="one dtype"):
        flash_attention(q, k.half(), v)
    with pytest.raises(ValueError, match="dtype must be one of"):
        flash_attention(q.double(), k.double(), v.double())


def test_mismatched_devices():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="one device"):
        flash_attention(q.to("meta"), k, v)


def test_bad_mask_and_layout():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="bool tensor"):
        flash_attention(q, k, v, key_padding_mask=torch.ones(1, 4, device=DEVICE))
    with pytest.raises(ValueError, match=r"shape \(B, N_k\)"):
        flash_attention(q, k, v, key_padding_mask=torch.ones(1, 5, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="layout must be one of"):
        flash_attention(q, k, v, layout="bnd")


@pytest.mark.skipif(not INTERPRETED, reason="only the CPU interpreter lacks bfloat16")
def test_bfloat16_rejected_by_interpreter():
    q, k, v = _qkv(dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 is not supported by Triton's CPU interpreter"):
        flash_attention(q, k, v)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-without-interpreter error")
def test_cpu_without_interpreter_is_a_clear_error():
    """Compiled kernels (no interpreter) and CPU tensors: flash_attention and the attention module's triton
    backend both say what to do instead of failing inside Triton."""
    code = ("import torch; from minivid.kernels import flash_attention; from minivid.nn import attention\n"
            "x = torch.randn(1, 1, 3, 16)\n"
            "try:\n    flash_attention(x, x, x)\nexcept RuntimeError as e:\n"
            "    assert 'TRITON_INTERPRET=1' in str(e), e\nelse:\n    raise SystemExit('no error')\n"
            "try:\n    attention(x, x, x, backend='triton')\nexcept ValueError as e:\n"
            "    assert \"backend='triton' got tensors on cpu\" in str(e), e\nelse:\n    raise SystemExit('no error')")
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


# --------------------------------------------------------------------------------------------------
# GPU only: compiled kernels, half precision, realistic shapes (skipped without CUDA)
# --------------------------------------------------------------------------------------------------


@gpu
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=("fp16", "bf16"))
@pytest.mark.parametrize("shape", ((2, 4, 1000, 64), (1, 2, 2049, 128), (4096, 2, 16, 64), (777, 3, 7, 32)),
                         ids=("N1000-D64", "N2049-D128", "temporal-N16", "temporal-N7"))
@pytest.mark.parametrize("causal", (False, True), ids=("full", "causal"))
def test_gpu_half_precision(dtype, shape, causal):
    B, H, n, D = shape
    g = torch.Generator().manual_seed(n)
    q, k, v, do = (torch.randn(B, n, H, D, generator=g).to("cuda", dtype) for _ in range(4))
    kpm = (torch.rand(B, n, generator=g) < 0.8).cuda()
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    o = flash_attention(q, k, v, causal=causal, key_padding_mask=kpm, layout="bnhd")
    grads = torch.autograd.grad(o, (q, k, v), do)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    o64 = attention_reference(q64, k64, v64, causal=causal, key_padding_mask=kpm, layout="bnhd")
    ref = torch.autograd.grad(o64, (q64, k64, v64), do.double())
    for name, a, e in zip(("O", "dQ", "dK", "dV"), (o, *grads), (o64, *ref)):
        _assert_close(a, e, RTOL[dtype], f"{shape} {dtype} {name}")


@gpu
@pytest.mark.parametrize("dtype,shape,view", (
    (torch.float32, (1, 2, 300, 64), "plain"),  # the float32 long-sequence tiles (IEEE products)
    (torch.float32, (512, 2, 16, 128), "plain"),  # float32 short class: split kernels, tiles that never cover N
    (torch.bfloat16, (1, 4, 1000, 72), "packed"),  # D = 72 padded to 128, 16-byte-aligned rows: the ALIGN hint
    (torch.bfloat16, (2, 2, 333, 72), "offset"),  # D = 72 starting 2 bytes into its storage: no hint
    (torch.float16, (4096, 2, 16, 40), "packed"),  # padded D = 40 on the one-kernel short backward
), ids=("fp32-N300-D64", "fp32-temporal-D128", "bf16-N1000-D72-packed", "bf16-N333-D72-offset",
        "fp16-temporal-D40-packed"))
def test_gpu_float32_padded_head_dims_and_determinism(dtype, shape, view):
    """The compiled paths the half-precision test does not reach, against float64; then a second run must be
    bit-identical (no atomics)."""
    B, H, n, D = shape
    g = torch.Generator().manual_seed(D)
    if view == "packed":  # q, k, v sliced out of one (B, N, 3, H, D) tensor
        qkv = torch.randn(B, n, 3, H, D, generator=g).to("cuda", dtype)
        q, k, v = qkv.unbind(2)
    elif view == "offset":  # (B, N, H, D) views whose storage starts one element in: rows not 16-byte aligned
        q, k, v = (torch.randn(B, n, H, D + 1, generator=g).to("cuda", dtype)[..., 1:] for _ in range(3))
    else:
        q, k, v = (torch.randn(B, n, H, D, generator=g).to("cuda", dtype) for _ in range(3))
    assert _stride_align("bnhd", q, k, v) == {"packed": 16, "offset": 1, "plain": 1}[view]
    do = torch.randn(B, n, H, D, generator=g).to("cuda", dtype)
    kpm = (torch.rand(B, n, generator=g) < 0.8).cuda()
    runs = []
    for _ in range(2):
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        o = flash_attention(*leaves, causal=True, key_padding_mask=kpm, layout="bnhd")
        runs.append((o, *torch.autograd.grad(o, leaves, do)))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    o64 = attention_reference(q64, k64, v64, causal=True, key_padding_mask=kpm, layout="bnhd")
    ref = (o64, *torch.autograd.grad(o64, (q64, k64, v64), do.double()))
    for name, a, e in zip(("O", "dQ", "dK", "dV"), runs[0], ref):
        _assert_close(a, e, RTOL[dtype], f"{shape} {dtype} {view} {name}")
    assert all(torch.equal(a, b) for a, b in zip(*runs)), "two runs differ"
