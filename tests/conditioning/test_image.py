"""R4's image condition: the OpenCLIP tower (offline default, preprocessing against torchvision, the loading paths on
an open_clip checkpoint the test writes, freezing, minivid's save/load), the VAE content encoder on frame (T-1)//2,
e_img = MLP(e_s) ⊕ MLP(e_c) against a manual computation, [e_img, e_p] and the null condition."""

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from minivid.autoencoders import VAE2D, VAE2DConfig
from minivid.conditioning.image import (ContentImageEncoder, ImageCondition, SemanticImageEncoder,
                                        SemanticImageEncoderConfig, condition_tokens, middle_frame_index,
                                        resample_tokens)
from minivid.nn import load_model, save_model

G = torch.Generator().manual_seed(0)


def images(b=2, h=40, w=48):
    return torch.rand(b, 3, h, w, generator=G) * 2 - 1  # minivid's [-1, 1]


def tiny_vae():
    return VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4))


def test_default_is_a_small_random_vit_with_patch_tokens():
    enc = SemanticImageEncoder()
    assert isinstance(enc.visual, open_clip.transformer.VisionTransformer) and enc.num_parameters() < 200_000
    tokens, mask = enc(images())
    # 32 px / 8 px patches = a 4 x 4 grid, width 64, the class token dropped
    assert enc.grid_size == (4, 4) and enc.width == 64 and tokens.shape == (2, 16, 64)
    assert mask.dtype == torch.bool and mask.shape == (2, 16) and mask.all()
    pooled = SemanticImageEncoder(pooled_only=True)
    assert pooled(images())[0].shape == (2, 1, 32) and pooled.grid_size == (1, 1) and pooled.width == 32
    enc = SemanticImageEncoder(image_size=64, patch_size=8, width=32, heads=2)
    assert enc(images())[0].shape == (2, 64, 32)


def test_preprocessing_is_resize_then_openai_normalisation():
    enc = SemanticImageEncoder()
    x = images()
    expected = TF.resize((x + 1) / 2, [32, 32], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    expected = TF.normalize(expected, mean=list(open_clip.OPENAI_DATASET_MEAN), std=list(open_clip.OPENAI_DATASET_STD))
    assert torch.allclose(enc.preprocess(x), expected, atol=1e-6)
    # the tower sees exactly that
    enc.eval()
    _, tokens = enc.visual(expected)
    assert torch.allclose(enc(x)[0], tokens, atol=1e-6)


def test_bad_input_and_config():
    enc = SemanticImageEncoder()
    with pytest.raises(ValueError, match=r"images must be in \[-1, 1\].*2 \* x - 1"):
        enc(torch.full((1, 3, 32, 32), 200.0))
    with pytest.raises(ValueError, match=r"images must be a tensor \(B, 3, H, W\), got \(1, 1, 32, 32\)"):
        enc(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="width=30 is invalid: expected a multiple of heads=4"):
        SemanticImageEncoderConfig(width=30)
    with pytest.raises(ValueError, match="image_size=36 is invalid"):
        SemanticImageEncoderConfig(image_size=36)
    with pytest.raises(ValueError, match="pretrained='x.pt' needs name_or_path"):
        SemanticImageEncoderConfig(pretrained="x.pt")


def test_frozen_encoders_have_no_gradients_and_stay_in_eval():
    enc = SemanticImageEncoder(trainable=False).train()
    assert not enc.visual.training and not any(p.requires_grad for p in enc.visual.parameters())
    assert not enc(images())[0].requires_grad
    enc = SemanticImageEncoder().train()
    assert enc.visual.training and enc(images())[0].requires_grad
    content = ContentImageEncoder(tiny_vae()).train()
    assert not content.autoencoder.training and not any(p.requires_grad for p in content.parameters())
    assert not content(images(h=16, w=16)[:, :, None])[0].requires_grad
    content = ContentImageEncoder(tiny_vae(), trainable=True).train()
    assert content.autoencoder.training and content(images(h=16, w=16)[:, :, None])[0].requires_grad


def tiny_clip():
    """A tiny open_clip CLIP (ViT image tower + text transformer) and its model config."""
    cfg = dict(embed_dim=16,
               vision_cfg=dict(image_size=16, layers=1, width=32, head_width=16, patch_size=8),
               text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1))
    torch.manual_seed(5)
    return open_clip.CLIP(**cfg).eval(), cfg


def test_loads_a_local_open_clip_folder_and_round_trips(tmp_path):
    clip, cfg = tiny_clip()
    folder = tmp_path / "clip"
    folder.mkdir()
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.5, 0.75)  # a checkpoint's own normalisation (SigLIP-like), not OpenAI's
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg,
                                                             "preprocess_cfg": {"mean": mean, "std": std}}))
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    enc = SemanticImageEncoder(name_or_path=str(folder), trainable=False)
    ours = enc.visual.state_dict()
    assert ours.keys() == clip.visual.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in clip.visual.state_dict().items())
    x = images()
    pixels = TF.normalize(TF.resize((x + 1) / 2, [16, 16], antialias=True), mean=list(mean), std=list(std))
    with torch.no_grad():
        pooled = clip.encode_image(pixels)  # the pooled, projected CLIP embedding
        clip.visual.output_tokens = True
        _, expected = clip.visual(pixels)
    tokens, _ = enc(x)
    assert tokens.shape == (2, 4, 32) and torch.allclose(tokens, expected, atol=1e-6)
    pooled_enc = SemanticImageEncoder(name_or_path=str(folder), pooled_only=True).eval()
    assert torch.allclose(pooled_enc(x)[0][:, 0], pooled, atol=1e-6)
    # minivid's own format: the checkpoint's weights survive save_model / load_model
    save_model(enc, tmp_path / "minivid")
    loaded = load_model(tmp_path / "minivid")
    assert isinstance(loaded, SemanticImageEncoder) and loaded.config == enc.config
    assert torch.equal(loaded(x)[0], tokens)
    # nothing is ever downloaded: missing folders, files and tags are errors
    with pytest.raises(ValueError, match="no open_clip_config.json"):
        SemanticImageEncoder(name_or_path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    with pytest.raises(ValueError, match="no weights"):
        SemanticImageEncoder(name_or_path=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="never downloads"):
        SemanticImageEncoder(name_or_path="hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    with pytest.raises(ValueError, match="pretrained='openai' is invalid.*never downloads"):
        SemanticImageEncoder(name_or_path="ViT-B-32", pretrained="openai")
    with pytest.raises(ValueError, match="neither a folder nor an open_clip architecture"):
        SemanticImageEncoder(name_or_path="no-such-architecture",
                             pretrained=str(folder / "open_clip_pytorch_model.bin"))


def test_loads_an_architecture_name_with_a_local_checkpoint(tmp_path):
    clip, cfg = tiny_clip()
    (tmp_path / "minivid-test-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "minivid-test-tiny-clip.json")  # registers the name (its file's stem)
    ckpt = tmp_path / "weights.pt"
    torch.save(clip.state_dict(), ckpt)
    enc = SemanticImageEncoder(name_or_path="minivid-test-tiny-clip", pretrained=str(ckpt)).eval()
    assert all(torch.equal(enc.visual.state_dict()[k], v) for k, v in clip.visual.state_dict().items())
    x = images()
    clip.visual.output_tokens = True
    pixels = TF.normalize(TF.resize((x + 1) / 2, [16, 16], antialias=True), mean=list(open_clip.OPENAI_DATASET_MEAN),
                          std=list(open_clip.OPENAI_DATASET_STD))
    with torch.no_grad():
        assert torch.allclose(enc(x)[0], clip.visual(pixels)[1], atol=1e-6)
    with pytest.raises(ValueError, match="never downloads"):
        SemanticImageEncoder(name_or_path="minivid-test-tiny-clip", pretrained=str(tmp_path / "missing.pt"))


def test_content_encoder_reads_exactly_frame_t_minus_1_over_2():
    assert [middle_frame_index(t) for t in (1, 2, 4, 5, 16)] == [0, 0, 1, 2, 7]
    vae = tiny_vae().eval()
    enc = ContentImageEncoder(vae)
    video = torch.rand(2, 3, 4, 16, 16, generator=G) * 2 - 1
    tokens, mask = enc(video)
    assert tokens.shape == (2, 16, 4) and mask.all() and enc.grid_size(16, 16) == (4, 4) and enc.width == 4
    # the posterior mean of frame (4 - 1) // 2 = 1, through the VAE's image path, flattened (h w)
    mean = vae.encode(video[:, :, 1]).mean  # (B, |z|, 4, 4)
    assert torch.allclose(tokens, mean.flatten(2).transpose(1, 2), atol=1e-6)
    for t in (0, 2, 3):  # other frames (2 = T // 2 included) do not matter
        other = video.clone()
        other[:, :, t] = -other[:, :, t]
        assert torch.equal(enc(other)[0], tokens)
    other = video.clone()
    other[:, :, 1] = -other[:, :, 1]
    assert not torch.allclose(enc(other)[0], tokens, atol=1e-3)
    with pytest.raises(ValueError, match=r"video must be in \[-1, 1\]"):
        enc(video * 3)
    with pytest.raises(ValueError, match="autoencoder must be a minivid autoencoder"):
        ContentImageEncoder(torch.nn.Linear(2, 2))


def test_image_condition_is_the_sum_of_the_two_mlps():
    torch.manual_seed(0)
    cond = ImageCondition(semantic_dim=8, content_dim=4, dim=12)
    e_s, e_c = torch.randn(2, 16, 8, generator=G), torch.randn(2, 16, 4, generator=G)

    def mlp(m, x):  # Linear -> GELU (tanh) -> Linear, written out
        return F.linear(F.gelu(F.linear(x, m[0].weight, m[0].bias), approximate="tanh"), m[2].weight, m[2].bias)

    # same grids (4 x 4 both): no resampling, e_img = MLP(e_s) + MLP(e_c) token by token
    e_img, mask = cond(e_s, e_c)
    assert e_img.shape == (2, 16, 12) and mask.all()
    assert torch.allclose(e_img, mlp(cond.mlp_s, e_s) + mlp(cond.mlp_c, e_c), atol=1e-6)
    # an 8 x 8 content grid goes onto the 4 x 4 semantic grid: bilinear, antialiased, on the (h, w) grid
    e_c = torch.randn(2, 64, 4, generator=G)
    e_img, _ = cond(e_s, e_c)
    c = mlp(cond.mlp_c, e_c).transpose(1, 2).reshape(2, 12, 8, 8)
    c = F.interpolate(c, size=(4, 4), mode="bilinear", antialias=True).reshape(2, 12, 16).transpose(1, 2)
    assert e_img.shape == (2, 16, 12) and torch.allclose(e_img, mlp(cond.mlp_s, e_s) + c, atol=1e-6)
    # a constant content grid stays constant when resampled (the resampling is a weighted mean)
    const = torch.randn(1, 1, 5, generator=G).expand(2, 12, 5)
    assert torch.allclose(resample_tokens(const, (3, 4), (2, 2)), const[:, :4], atol=1e-6)
    # align="content": e_img lives on the content grid; one pooled token is added to every content token
    cond_c = ImageCondition(8, 4, 12, align="content")
    pooled = torch.randn(2, 1, 8, generator=G)
    e_img, _ = cond_c(pooled, e_c, semantic_grid=(1, 1), content_grid=(8, 8))
    assert e_img.shape == (2, 64, 12)
    assert torch.allclose(e_img, mlp(cond_c.mlp_s, pooled) + mlp(cond_c.mlp_c, e_c), atol=1e-6)
    with pytest.raises(ValueError, match="content_grid=None is invalid for 12 tokens"):
        cond(e_s, torch.randn(2, 12, 4))
    with pytest.raises(ValueError, match=r"content_grid=\(3, 5\) is invalid"):
        cond(e_s, torch.randn(2, 12, 4), content_grid=(3, 5))
    with pytest.raises(ValueError, match=r"e_c must be tokens \(B, N, 4\)"):
        cond(e_s, torch.randn(2, 16, 5))
    with pytest.raises(ValueError, match="align='both' is invalid"):
        ImageCondition(8, 4, 12, align="both")


def test_end_to_end_condition_tokens_and_null():
    semantic, content = SemanticImageEncoder(), ContentImageEncoder(tiny_vae())
    cond = ImageCondition(semantic.width, content.width, dim=16)
    video = torch.rand(2, 3, 5, 16, 16, generator=G) * 2 - 1
    e_s, _ = semantic(video[:, :, middle_frame_index(5)])
    e_c, _ = content(video)
    e_img, m_img = cond(e_s, e_c, semantic.grid_size, content.grid_size(16, 16))
    e_p, m_p = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    e, m = condition_tokens(e_img, m_img, e_p, m_p)
    assert e.shape == (2, 21, 16) and torch.equal(e[:, :16], e_img) and torch.equal(e[:, 16:], e_p)
    assert m.sum(1).tolist() == [19, 21]
    null, null_mask = cond.null(2, 16)
    assert null.shape == (2, 16, 16) and not null.any() and null_mask.dtype == torch.bool and null_mask.all()
    with pytest.raises(ValueError, match="must have the same batch size and width"):
        condition_tokens(e_img, m_img, e_p[:, :, :8], m_p)
    with pytest.raises(ValueError, match="e_p_mask must be a bool mask"):
        condition_tokens(e_img, m_img, e_p, m_p.long())
    with pytest.raises(ValueError, match="num_tokens=0 is invalid"):
        cond.null(2, 0)


def test_save_model_round_trip_of_the_random_default(tmp_path):
    torch.manual_seed(3)
    enc = SemanticImageEncoder(pooled_only=True).eval()
    save_model(enc, tmp_path / "enc")
    torch.manual_seed(4)  # another init: every weight must come from the file
    loaded = load_model(tmp_path / "enc")
    x = images()
    assert loaded.config == enc.config and torch.equal(loaded(x)[0], enc(x)[0])
