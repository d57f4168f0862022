"""PSNR and SSIM against torchmetrics (an independent implementation) and closed forms."""

import math

import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from minivid.metrics import psnr, ssim


def test_psnr_closed_form_and_video_convention():
    x = torch.zeros(2, 3, 4, 8, 8)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 everywhere
    y[1, :, 0] += 0.2  # only frame 0 of clip 1 differs: MSE 0.04 there, the others are perfect (capped)
    p = psnr(y, x)
    assert abs(p[0] - 10 * math.log10(4 / 0.01)) < 1e-4
    per_frame = torch.tensor([10 * math.log10(4 / 0.04)] + [10 * math.log10(4 / 1e-20)] * 3)
    assert abs(p[1] - per_frame.mean()) < 1e-3


def test_psnr_and_ssim_match_torchmetrics_on_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 40, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    for i in range(3):
        ref_p = peak_signal_noise_ratio(y[i : i + 1], x[i : i + 1], data_range=2.0)
        assert abs(psnr(y, x)[i] - ref_p) < 1e-4
        # torchmetrics reflect-pads and averages the whole map; Wang et al.'s reference code (and minivid)
        # average the positions whose 11x11 window lies inside the image: the interior of its map.
        _, full = structural_similarity_index_measure(y[i : i + 1].double(), x[i : i + 1].double(), data_range=2.0,
                                                      return_full_image=True)
        assert abs(ssim(y, x)[i] - full[..., 5:-5, 5:-5].mean()) < 1e-6


def test_ssim_properties():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 2, 24, 24, generator=g) * 2 - 1
    assert abs(ssim(x, x).item() - 1) < 1e-6
    noisy = [ssim((x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1), x).item() for s in (0.05, 0.2, 0.5)]
    assert noisy[0] > noisy[1] > noisy[2]
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:, :, :1])
    with pytest.raises(ValueError, match="kernel_size=11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
