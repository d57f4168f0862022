r"""Multi-head attention with a backend switch (K1), shared by every transformer in minivid.

``attention(q, k, v, ...)`` computes :math:`\mathrm{softmax}(QK^\top/\sqrt d)\,V` (K1) on tensors of
shape (B, H, N, D) with one of three backends, all with the same semantics:

- ``"sdpa"`` (default): :func:`torch.nn.functional.scaled_dot_product_attention`, which dispatches to
  FlashAttention / memory-efficient / cuDNN kernels on a GPU;
- ``"math"``: the plain PyTorch reference (:func:`minivid.kernels.attention_reference`), explicit
  softmax, for teaching and tests;
- ``"triton"``: minivid's own FlashAttention-2 kernel (:func:`minivid.kernels.flash_attention`, K2-K3),
  on CUDA tensors (or on the CPU in Triton's interpreter, for tests); head dims 16 to 128;
- ``"auto"``: ``"triton"`` for CUDA tensors the kernel takes (float16/bfloat16/float32, head dims 16 to 128,
  Triton installed), ``"sdpa"`` for every other call (:func:`resolve_backend`): the Triton kernel on CUDA, SDPA
  elsewhere. It never imports Triton for CPU tensors, so it leaves Triton's interpreter switch alone.

Masks follow SDPA's boolean convention: ``key_padding_mask`` is (B, N_k) with **True = attend** (False =
padding, e.g. the unused slots of a text prompt), bool or integer 0/1 (a float mask is refused: an additive
-inf/0 mask would read the other way round); ``causal`` lets query i see keys j <= i. A query whose keys are
all masked returns zeros in every backend.

:class:`Attention` is the module: self- or cross-attention (``context``), optional QK-norm (LayerNorm on
each head's queries and keys, as CogVideoX does), and an optional ``rope`` callable applied to the
(B, H, N, D) queries and keys (the 1D/3D RoPE of the transformer issues).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import kernels
from ..kernels.reference import attention_reference

BACKENDS = ("sdpa", "math", "triton", "auto")
Rope = Callable[[torch.Tensor], torch.Tensor] | None  # a RoPE applied to (B, H, N, D) queries and keys


def _check_backend(backend: str, head_dim: int | None = None) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; allowed: {BACKENDS}")
    if backend == "triton" and head_dim is not None and not 16 <= head_dim <= 128:
        raise ValueError(f"backend='triton' needs a head dim in 16..128, this attention has head_dim={head_dim}; "
                         "use 'sdpa' or 'math'")
    return backend


_FLASH_EAGER = []  # kernels.flash_attention wrapped by torch.compiler.disable, made on first use


def _flash_attention_eager(q, k, v, causal, key_padding_mask, scale):
    """minivid's Triton kernel outside torch.compile's tracing: its launcher picks tiles in Python (the autotuner
    times them), which Dynamo cannot trace, so a compiled model breaks its graph here and runs the kernel as is.
    Wrapped on first use: ``torch.compiler`` imports Triton, which a CPU-only import of minivid must not do."""
    if not _FLASH_EAGER:
        _FLASH_EAGER.append(torch.compiler.disable(kernels.flash_attention))
    return _FLASH_EAGER[0](q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """The backend that ``attention(q, ..., backend=backend)`` runs: ``"auto"`` is ``"triton"`` when ``q`` is a CUDA
    tensor of a dtype and head dim the kernel takes and Triton imports, else ``"sdpa"``; any other backend is
    itself."""
    _check_backend(backend)
    if backend != "auto":
        return backend
    if not q.is_cuda:  # before any look-up that would import Triton
        return "sdpa"
    try:
        takes = q.dtype in kernels.SUPPORTED_DTYPES and q.shape[-1] in kernels.SUPPORTED_HEAD_DIMS
    except ImportError:  # a CUDA build of PyTorch without Triton
        return "sdpa"
    return "triton" if takes else "sdpa"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
              causal: bool = False, backend: str = "sdpa", scale: float | None = None) -> torch.Tensor:
    """K1 on (B, H, N, D) tensors: q (B, H, N_q, D), k and v (B, H, N_k, D) -> (B, H, N_q, D)."""
    backend = resolve_backend(backend, q)
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if key_padding_mask is not None:
        if key_padding_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(f"key_padding_mask must have shape (B, N_k) = {(k.shape[0], k.shape[2])}, "
                             f"got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.dtype.is_floating_point or key_padding_mask.dtype.is_complex:
            raise ValueError(f"key_padding_mask must be bool (True = attend) or integer 0/1, got "
                             f"{key_padding_mask.dtype}")
        key_padding_mask = key_padding_mask.to(torch.bool)  # the same mask for every backend
    if backend == "math":
        return attention_reference(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
    if backend == "triton":
        if not q.is_cuda and not kernels.interpreter_active():  # the first use of the kernels imports triton
            raise ValueError(f"backend='triton' got tensors on {q.device}: it runs on CUDA tensors (or on the CPU in "
                             "Triton's interpreter, TRITON_INTERPRET=1 set before triton is imported); use 'sdpa' "
                             "or 'math' on the CPU")

        if torch.is_autocast_enabled(q.device.type):  # cast as autocast casts SDPA's inputs: on CUDA, LayerNorm
            low = torch.get_autocast_dtype(q.device.type)  # (QK-norm) gives float32 queries and keys, v is bf16
            q, k, v = q.to(low), k.to(low), v.to(low)
        return _flash_attention_eager(q, k, v, causal, key_padding_mask, scale)
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, N_k), True = attend
        if causal:
            n_q, n_k = q.shape[2], k.shape[2]
            mask = mask & torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
            causal = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    if key_padding_mask is not None:  # rows with no key at all: zeros (SDPA may give NaN there)
        empty = ~key_padding_mask.any(dim=1)  # (B,)
        if empty.any():
            out = out.masked_fill(empty[:, None, None, None], 0.0)
    return out


class Attention(nn.Module):
    """Multi-head self- or cross-attention: ``x`` (B, N, dim) -> (B, N, dim).

    Args:
        dim: token width; ``heads`` heads of ``head_dim`` (default dim // heads) channels.
        context_dim: width of the ``context`` tokens for cross-attention (default: dim).
        qk_norm: LayerNorm over each head's channels of q and k before the product (CogVideoX).
        backend: "sdpa" | "math" | "triton" | "auto" (see the module docstring); can be changed at any time with
            :meth:`set_backend` or :func:`set_attention_backend` on a whole model.
        zero_init_out: zero the output projection so a residual block starts as the identity.
    """

    def __init__(self, dim: int, heads: int = 8, head_dim: int | None = None, context_dim: int | None = None,
                 qkv_bias: bool = True, qk_norm: bool = False, backend: str = "sdpa", zero_init_out: bool = False):
        super().__init__()
        if dim < 1 or heads < 1:
            raise ValueError(f"dim={dim} and heads={heads} must be positive")
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"dim={dim} must be divisible by heads={heads} (or pass head_dim)")
            head_dim = dim // heads
        self.heads, self.head_dim = heads, head_dim
        self.dim, self.context_dim = dim, context_dim or dim
        inner = heads * head_dim
        self.backend = _check_backend(backend, head_dim)
        self.to_q = nn.Linear(dim, inner, bias=qkv_bias)
        self.to_kv = nn.Linear(context_dim or dim, 2 * inner, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(inner, dim)
        if zero_init_out:
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.to_out.bias)

    def set_backend(self, backend: str) -> None:
        self.backend = _check_backend(backend, self.head_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, causal: bool = False,
                rope: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, N, dim); context (B, M, context_dim) or None (self-attention); key_padding_mask (B, M or N)
        True = attend; rope applied to q and k of shape (B, H, N, head_dim) (self-attention only)."""
        if context is None and self.context_dim != self.dim:
            raise ValueError(f"this Attention attends to a context of width {self.context_dim} (context_dim): pass "
                             "context (B, M, context_dim)")
        ctx = x if context is None else context
        for name, t, width in (("x", x, self.dim), ("context", ctx, self.context_dim)):
            if t.ndim != 3 or t.shape[-1] != width:
                raise ValueError(f"{name} must be (B, N, {width}) for this Attention, got shape {tuple(t.shape)}")
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(ctx), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            if context is not None:
                raise ValueError("rope applies to self-attention only (queries and keys share positions)")
            q, k = rope(q), rope(k)
        o = attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal, backend=self.backend)
        return self.to_out(rearrange(o, "b h n d -> b n (h d)"))


def set_attention_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every :class:`Attention` inside ``model`` to ``backend``; returns the model. Every one is checked
    (e.g. the triton backend's head dims) before any is switched."""
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    _check_backend(backend)
    for m in layers:
        _check_backend(backend, m.head_dim)
    for m in layers:
        m.set_backend(backend)
    return model


# ---------------------------------------------------------------------------------------------------
# Video attention patterns (L2) on z (B, n_f, t, d): who attends to whom. Shared by the DiT blocks
# (Latte's variants, PVDM's divided space-time transformers) and the U-Nets' space-time attention.
# ---------------------------------------------------------------------------------------------------


def spatial_attention(attn: Attention, h: torch.Tensor, rope: Rope = None) -> torch.Tensor:
    r"""L2: attention within each frame, on :math:`z_s \in \mathbb R^{n_f\times t\times d}`."""
    z_s = rearrange(h, "b n_f t d -> (b n_f) t d")
    return rearrange(attn(z_s, rope=rope), "(b n_f) t d -> b n_f t d", b=h.shape[0])


def temporal_attention(attn: Attention, h: torch.Tensor, num_video_frames: int | None = None,
                       rope: Rope = None) -> torch.Tensor:
    r"""L2: attention across frames at each position, on :math:`z_t \in \mathbb R^{t\times n_f\times d}`.
    Frames from ``num_video_frames`` on (appended images, L7) take no part and get zeros."""
    n = h.shape[1] if num_video_frames is None else num_video_frames
    z_t = rearrange(h[:, :n], "b n_f t d -> (b t) n_f d")
    out = rearrange(attn(z_t, rope=rope), "(b t) n_f d -> b n_f t d", b=h.shape[0])
    if n < h.shape[1]:
        out = torch.cat([out, torch.zeros_like(h[:, n:])], dim=1)  # L7: images excluded from temporal attention
    return out


def full_attention(attn: Attention, h: torch.Tensor, rope: Rope = None) -> torch.Tensor:
    """3D full attention over all n_f·t tokens of a clip (C5)."""
    n_f = h.shape[1]
    z = rearrange(h, "b n_f t d -> b (n_f t) d")
    return rearrange(attn(z, rope=rope), "b (n_f t) d -> b n_f t d", n_f=n_f)
