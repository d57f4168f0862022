"""LatentSpace: the latent scale of latent diffusion (1 / std of the posterior means) and batched, gradient-free
encoding and decoding that equal the autoencoder's own passes."""

import pytest
import torch

from minivid.autoencoders import LatentSpace, ReducioConfig, ReducioVAE, VAE2D, VAE2DConfig


def test_fit_gives_unit_variance_and_decode_inverts_the_scale():
    torch.manual_seed(0)
    vae = VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4)).eval()
    x = torch.rand(10, 3, 2, 8, 8) * 2 - 1
    space = LatentSpace.fit(vae, x, batch_size=3)  # 3 + 3 + 3 + 1 clips
    with torch.no_grad():
        raw = vae.encode(x).mode()
    assert space.scale == pytest.approx(1 / raw.std().item())
    z = space.encode(x)
    torch.testing.assert_close(z, raw * space.scale)
    assert z.std().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(space.decode(z), vae.reconstruct(x).clamp(-1, 1), rtol=1e-4, atol=2e-5)  # scale then unscale, other batches: rounding only
    assert not space.encode(x.requires_grad_()).requires_grad  # no graph is kept
    with pytest.raises(ValueError, match="scale=0.0 is invalid"):
        LatentSpace(vae, 0.0)
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        LatentSpace(vae, 1.0, batch_size=0)


def test_decode_slices_the_conditions_with_the_latents():
    """Reducio decodes with each clip's content frame: batch by batch, the frames go with their latents."""
    torch.manual_seed(1)
    vae = ReducioVAE(ReducioConfig(channels=8, num_res_blocks=1, norm_groups=4, content_channels=8,
                                   content_num_res_blocks=1, fusion_head_dim=16)).eval()
    x = torch.rand(3, 3, 4, 32, 32) * 2 - 1
    space = LatentSpace(vae, scale=2.0, batch_size=2)
    z = space.encode(x)
    content = vae.conditions(x)["content"]
    with torch.no_grad():
        whole = vae.decode(z / 2.0, content=content).clamp(-1, 1)
    torch.testing.assert_close(space.decode(z, content=content), whole, rtol=1e-4, atol=2e-5)  # scale then unscale, other batches: rounding only
