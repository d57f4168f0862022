"""The one sinusoid of minivid (timestep embeddings and sin-cos position tables, L1, L6, C3) against independent
ground truth: a direct numpy formula, diffusers' embeddings (DiT's timestep convention, MAE's and CogVideoX's
tables)."""

import numpy as np
import pytest
import torch
from diffusers.models.embeddings import (
    get_1d_sincos_pos_embed_from_grid,
    get_2d_sincos_pos_embed,
    get_3d_sincos_pos_embed,
    get_timestep_embedding,
)

from minivid.nn import sincos_1d, sincos_2d, sincos_3d, sincos_axes, sinusoid, timestep_embedding


def test_the_two_conventions_are_one_sinusoid_in_two_orders():
    """Timesteps: [cos | sin] (DDPM / ADM / DiT, diffusers' flip_sin_to_cos=True, downscale_freq_shift=0);
    positions: [sin | cos]; the same frequencies 10000^(-k/(D/2)); an odd width gets a zero channel."""
    t = torch.tensor([0.0, 1.0, 17.0, 999.0, 2.5])
    ref = get_timestep_embedding(t, 64, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_embedding(t, 64), ref, rtol=1e-5, atol=1e-5)
    pos = sinusoid(t, 64)
    torch.testing.assert_close(torch.cat([pos[:, 32:], pos[:, :32]], 1), sinusoid(t, 64, cos_first=True))
    odd = timestep_embedding(t, 7)
    assert odd.shape == (5, 7) and odd[:, 6].abs().max() == 0
    torch.testing.assert_close(odd[:, :6], timestep_embedding(t, 6))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        timestep_embedding(t[:, None], 8)
    with pytest.raises(ValueError, match="dim=1 is invalid"):
        sinusoid(t, 1)


def test_sincos_tables_match_a_direct_numpy_formula_and_diffusers():
    """PE(m) = [sin(m w_k)] || [cos(m w_k)], w_k = 10000^(-k/(D/2)); 2D: first half the column, second the
    row (MAE / DiT / Latte), checked on a non-square grid; 1D and square 2D also against diffusers."""
    n_h, n_w, d = 3, 5, 16
    q = d // 4
    omega = 10000.0 ** (-np.arange(q) / q)
    ref = np.zeros((n_h * n_w, d))
    for i in range(n_h):
        for j in range(n_w):
            ref[i * n_w + j] = np.concatenate([np.sin(j * omega), np.cos(j * omega),  # column w
                                               np.sin(i * omega), np.cos(i * omega)])  # row h
    np.testing.assert_allclose(sincos_2d(n_h, n_w, d).numpy(), ref, rtol=0, atol=1e-6)
    pos = torch.tensor([0.0, 1.0, 7.0, 30.0])
    torch.testing.assert_close(sincos_1d(pos, 12), get_1d_sincos_pos_embed_from_grid(12, pos).float())
    ref2 = get_2d_sincos_pos_embed(32, 6, base_size=6).float()  # base_size = grid: integer positions
    torch.testing.assert_close(sincos_2d(6, 6, 32), ref2, atol=1e-6, rtol=0)


def test_sincos_3d_matches_diffusers_cogvideox_layout():
    """3D: [1D table of the frame (D/4) || 2D table of (h, w) (3D/4)], tokens (f, h, w)."""
    n_f, n_h, n_w, d = 3, 2, 4, 32
    ref = get_3d_sincos_pos_embed(d, (n_w, n_h), n_f)  # diffusers: spatial_size = (width, height)
    torch.testing.assert_close(sincos_3d(n_f, n_h, n_w, d), ref.float(), atol=1e-6, rtol=0)


def test_sincos_axes_concatenates_one_table_per_axis_and_takes_fractional_positions():
    a, b = torch.tensor([0.5, 1.5, 2.5]), torch.tensor([0.25, 4.0, 9.0])  # 3 tokens, 2 axes
    table = sincos_axes((a, b), (4, 8))
    torch.testing.assert_close(table, torch.cat([sincos_1d(a, 4), sincos_1d(b, 8)], 1))
    rows, cols = a, b[:2]
    h, w = torch.meshgrid(rows, cols, indexing="ij")
    torch.testing.assert_close(sincos_2d(rows, cols, 8), sincos_axes((w.flatten(), h.flatten()), (4, 4)))
    with pytest.raises(ValueError, match="coords has 2 axes but dims=\\(4,\\)"):
        sincos_axes((a, b), (4,))
    with pytest.raises(ValueError, match="one coordinate per token on every axis"):
        sincos_axes((rows, cols), (4, 4))
    with pytest.raises(ValueError, match="dim=6 is invalid: a 2D sin-cos embedding needs a multiple of 4"):
        sincos_2d(2, 2, 6)
