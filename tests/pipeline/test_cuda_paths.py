"""The library calls the notebooks make at their GPU scale, on CUDA (skipped without a GPU; `bench/gpu_session.sh`
step 2 runs them): a review of the notebooks' CUDA branches found these crashing on device mismatches, never seen
on a CPU-only machine."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _space(device):
    import minivid.pretrained as zoo
    from minivid.autoencoders import LatentSpace

    return LatentSpace(zoo.load("vae2d", device=device), zoo.card("vae2d")["latent_scale"])


def test_cuda_content_tokens_follow_the_frames_device():
    from minivid.pipeline.image2video import content_tokens

    frames = torch.rand(3, 3, 32, 32) * 2 - 1
    on_gpu = content_tokens(_space("cuda"), frames)
    assert on_gpu.device.type == "cpu"
    assert torch.allclose(on_gpu, content_tokens(_space("cpu"), frames), atol=1e-2)


def test_cuda_text_to_video_trains_with_a_gpu_vae():
    from minivid.pipeline.text2video import TextToVideoConfig, train_text_to_video
    from minivid.transformers import ExpertTransformerConfig

    small = TextToVideoConfig(transformer=ExpertTransformerConfig(in_channels=4, patch_size=2, heads=2, head_dim=16,
                                                                  depth=1, time_embed_dim=32, text_dim=64,
                                                                  max_text_len=72, rope_grid="slice",
                                                                  base_size=(8, 8)))
    _, trainer = train_text_to_video(_space("cuda"), 2, batch=4, num_clips=8, config=small, progress=False,
                                     log=lambda m: None)
    assert len(trainer.losses) == 2


def test_cuda_show_paths_draws_gpu_videos():
    from minivid.pipeline.tora import show_paths

    videos = torch.zeros(2, 3, 4, 16, 16, device="cuda")
    paths = torch.full((2, 4, 2), 8.0, device="cuda")
    assert show_paths(videos, paths) is not None
