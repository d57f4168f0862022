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


def _small_t2v():
    from minivid.pipeline.text2video import TextToVideoConfig
    from minivid.transformers import ExpertTransformerConfig

    return TextToVideoConfig(transformer=ExpertTransformerConfig(in_channels=4, patch_size=2, heads=2, head_dim=16,
                                                                 depth=1, time_embed_dim=32, text_dim=64,
                                                                 max_text_len=72, rope_grid="slice", base_size=(8, 8)))


def test_cuda_text_to_video_trains_and_samples_on_the_gpu():
    """``device="cuda"``: the model trains there on the CPU's draws, so its first loss is the CPU run's (same batch,
    timesteps and noise, to float32 and TF32 numerics), and samples on the GPU come back on the CPU."""
    from minivid.pipeline.text2video import sample_text_to_video, train_text_to_video

    quiet = dict(batch=4, num_clips=8, config=_small_t2v(), progress=False, log=lambda m: None)
    _, on_cpu = train_text_to_video(_space("cpu"), 2, **quiet)
    model, on_gpu = train_text_to_video(_space("cpu"), 2, device="cuda", **quiet)
    assert next(model.parameters()).is_cuda
    assert on_gpu.losses[0] == pytest.approx(on_cpu.losses[0], rel=1e-2)
    videos = sample_text_to_video(model, _space("cuda"), ["a red circle moves up"], steps=3, device="cuda")
    assert videos.device.type == "cpu" and videos.shape == (1, 3, 8, 32, 32)


def test_cuda_image_to_video_trains_on_the_gpu():
    from minivid.pipeline.image2video import ImageToVideoConfig, train_image_to_video
    from minivid.conditioning import SemanticImageEncoderConfig
    from minivid.transformers import ReducioDiTConfig

    config = ImageToVideoConfig(
        semantic=SemanticImageEncoderConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2, embed_dim=8),
        dit=ReducioDiTConfig(in_channels=4, patch_size=2, dim=32, depth=1, heads=2, cond_dim=16), content_grid=(8, 8))
    quiet = dict(batch=4, num_clips=8, config=config, progress=False, log=lambda m: None)
    _, on_cpu = train_image_to_video(_space("cpu"), 2, **quiet)
    model, on_gpu = train_image_to_video(_space("cuda"), 2, device="cuda", **quiet)
    assert next(model.parameters()).is_cuda
    assert on_gpu.losses[0] == pytest.approx(on_cpu.losses[0], rel=1e-2)


def test_cuda_tora_trains_and_samples_where_the_model_is():
    """train_tora(device="cuda") on CPU-side data (tora_data keeps its fields on the CPU, wherever the VAEs run);
    sample_tora follows the model: the GPU model's samples equal the CPU copy's to float32 numerics."""
    import copy

    from minivid.conditioning.motion import MotionGuidanceConfig
    from minivid.pipeline.tora import Tora, ToraConfig, ToraStage, sample_tora, tora_data, train_tora
    from minivid.pipeline.zoo import zoo_latent_space
    from minivid.transformers import STDiTConfig

    space, motion_space = zoo_latent_space("vae2d"), zoo_latent_space("motion-vae")
    space.autoencoder.cuda()
    data = tora_data(space, motion_space, 8, dense=False)
    assert data.video.device.type == "cpu" and data.null.device.type == "cpu"
    torch.manual_seed(0)
    model = Tora(ToraConfig(base=STDiTConfig(in_channels=4, patch_size=2, dim=32, depth=2, heads=4, text_dim=32),
                            motion=MotionGuidanceConfig(motion_channels=4, dim=32, depth=2, patch_size=2,
                                                        motion_dim=16)))
    train_tora(model, data, [ToraStage(3, "sparse", "all")], batch=4, progress=False, log=lambda m: None,
               device="cuda")
    assert next(model.parameters()).is_cuda
    on_cpu = copy.deepcopy(model).cpu()
    args = (data.video[:2, :, 0], data.sparse[:2], data.null)
    gpu_videos = sample_tora(model, space, *args, steps=3)
    cpu_videos = sample_tora(on_cpu, space, *args, steps=3)
    assert gpu_videos.device.type == "cpu"
    assert (gpu_videos - cpu_videos).abs().max() < 2e-2
