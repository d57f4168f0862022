"""Shared autoencoder losses: LPIPS against the `lpips` package (same weights, independent code), the
weight-loading paths on files the tests write, PatchGAN locality, hinge losses, the adaptive weight."""

from pathlib import Path

import lpips
import pytest
import torch

from minivid.autoencoders import (PatchDiscriminator2D, PatchDiscriminator3D, PerceptualLoss, adaptive_gan_weight,
                                  hinge_d_loss, hinge_g_loss)
from minivid.utils import save_weights

LPIPS_LIN = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"  # ships inside the lpips package


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The lpips package's LPIPS with a random VGG backbone (ImageNet weights cannot be downloaded here) and
    its real lin layers, plus that backbone saved in torchvision's key format."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning):  # torchvision's deprecation notice for lpips' `pretrained=False`
        ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    state = {}
    for name, p in ref.net.state_dict().items():  # "slice1.0.weight" -> "features.0.weight"
        state["features." + name.split(".", 1)[1]] = p
    path = tmp_path_factory.mktemp("w") / "vgg16.pth"
    torch.save(state, path)
    return ref, path


def test_perceptual_loss_matches_the_lpips_package(reference):
    ref, vgg_path = reference
    ours = PerceptualLoss(vgg_weights=vgg_path, lin_weights=LPIPS_LIN)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 40, 48, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        expected = ref(x, y).flatten()
    torch.testing.assert_close(ours(x, y), expected, rtol=1e-4, atol=1e-6)
    # videos: the mean of the per-frame distances
    v, w = torch.stack([x, y], 2), torch.stack([y, x], 2)  # (3, 3, 2, H, W)
    torch.testing.assert_close(ours(v, w), expected, rtol=1e-4, atol=1e-6)


def test_perceptual_loss_properties_and_saved_module_round_trip(tmp_path, reference):
    _, vgg_path = reference
    ours = PerceptualLoss(vgg_weights=vgg_path, lin_weights=LPIPS_LIN)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert ours(x, x).abs().max() < 1e-6
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    torch.testing.assert_close(ours(x, y), ours(y, x))
    assert (ours(x, y) > 0).all()
    save_weights(ours, tmp_path / "lpips.safetensors")
    torch.testing.assert_close(PerceptualLoss.from_file(tmp_path / "lpips.safetensors")(x, y), ours(x, y))


def test_perceptual_loss_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="none can be downloaded"):
        PerceptualLoss()
    with pytest.raises(ValueError, match="vgg_weights"):
        PerceptualLoss(lin_weights=LPIPS_LIN)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        PerceptualLoss(vgg_weights=tmp_path / "nope.pth", lin_weights=LPIPS_LIN)
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG16"):
        PerceptualLoss(vgg_weights=tmp_path / "bad.pth", lin_weights=LPIPS_LIN)
    assert PerceptualLoss(allow_random=True)(torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)) > 0


def test_patch_discriminators_are_local_and_the_3d_one_sees_time():
    torch.manual_seed(3)
    d2, d3 = PatchDiscriminator2D(channels=8, num_layers=2).eval(), PatchDiscriminator3D(channels=8, num_layers=2).eval()
    x = torch.randn(1, 3, 6, 32, 32)
    x2 = x.clone()
    x2[0, :, 2, 0:2, 0:2] += 5.0  # a corner of frame 2
    for d in (d2, d3):
        diff = (d(x2) - d(x)).abs()[0, 0]  # (T, h, w)
        assert diff[:, -1, -1].max() == 0  # the opposite corner's patch does not see it
        assert diff[2].max() > 0
    diff2 = (d2(x2) - d2(x)).abs()[0, 0]
    diff3 = (d3(x2) - d3(x)).abs()[0, 0]
    assert diff2[[0, 1, 3, 4, 5]].max() == 0  # 2D: other frames untouched
    assert diff3[1].max() > 0 and diff3[3].max() > 0  # 3D: neighbouring frames see it


def test_patch_discriminators_reject_frames_too_small_for_their_layers():
    """3 * 2**num_layers pixels is the smallest frame that still gives one logit (and works)."""
    for cls in (PatchDiscriminator2D, PatchDiscriminator3D):
        d = cls(channels=4, num_layers=2).eval()
        assert d(torch.zeros(1, 3, 2, 12, 12)).shape[-2:] == (1, 1)
        with pytest.raises(ValueError, match=rf"{cls.__name__}\(num_layers=2\) needs frames of at least 12x12 "
                                             r"\(3 \* 2\*\*num_layers\), got 11x16"):
            d(torch.zeros(1, 3, 2, 11, 16))


def test_hinge_losses_and_adaptive_weight():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    assert torch.isclose(hinge_d_loss(real, fake), torch.tensor(0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3)))
    assert torch.isclose(hinge_g_loss(fake), torch.tensor(1 / 3))
    w = torch.randn(4, 4, requires_grad=True)
    rec, gan = (w**2).sum(), 3 * w.sum()
    lam = adaptive_gan_weight(rec, gan, w)
    expected = (2 * w).norm() / (torch.full((4, 4), 3.0).norm() + 1e-4)
    assert torch.isclose(lam, expected.detach()) and not lam.requires_grad
