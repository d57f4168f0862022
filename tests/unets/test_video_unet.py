"""The factorised video U-Net (notebook 01, the zoo's latent-unet): shapes, conditioning, what mixes across time,
clear errors."""

import pytest
import torch

from minivid.unets import VideoUNet, VideoUNetConfig

TINY = dict(channels=8, channel_mult=(1, 2), heads=2, norm_groups=4)


def randomised(model: VideoUNet) -> VideoUNet:
    """The zero-initialised output layers make a fresh model output 0; give every weight a random value."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_shapes(frames, learn_sigma):
    m = VideoUNet(VideoUNetConfig(learn_sigma=learn_sigma, **TINY))
    x = torch.randn(2, 3, frames, 16, 16)
    out = m(x, torch.tensor([0, 999]))
    assert out.shape == (2, 6 if learn_sigma else 3, frames, 16, 16)
    assert out.abs().max() == 0  # zero-initialised head: a fresh model predicts 0


def test_timestep_and_label_change_the_output():
    m = randomised(VideoUNet(VideoUNetConfig(num_classes=5, **TINY))).eval()
    x = torch.randn(1, 3, 4, 8, 8)
    a = m(x, torch.tensor([10]), torch.tensor([2]))
    assert not torch.allclose(a, m(x, torch.tensor([500]), torch.tensor([2])))
    assert not torch.allclose(a, m(x, torch.tensor([10]), torch.tensor([3])))
    torch.testing.assert_close(m(x, torch.tensor([10])), m(x, torch.tensor([10]), torch.tensor([5])))  # null class


def test_information_flows_across_frames_and_batch_items_stay_separate():
    m = randomised(VideoUNet(VideoUNetConfig(**TINY))).eval()
    x = torch.randn(2, 3, 6, 8, 8)
    t = torch.tensor([100, 100])
    base = m(x, t)
    x2 = x.clone()
    x2[0, :, 0] += 1.0  # perturb the first frame of the first clip
    diff = (m(x2, t) - base).abs().amax(dim=(1, 3, 4))  # (B, T)
    assert (diff[0, 1:] > 1e-4).all()  # every other frame of that clip sees it (temporal conv + attention)
    assert diff[1].max() == 0  # the other clip does not


@pytest.mark.parametrize(
    "kwargs, x_shape, match",
    [
        ({}, (1, 4, 2, 8, 8), "x must have shape"),
        ({}, (1, 3, 2, 9, 9), "divisible by 2"),
        ({"channel_mult": ()}, None, "channel_mult"),
        ({"channels": 6}, None, "norm_groups=4"),
    ],
)
def test_bad_input(kwargs, x_shape, match):
    with pytest.raises(ValueError, match=match):
        m = VideoUNet(VideoUNetConfig(**{**TINY, **kwargs}))
        m(torch.zeros(x_shape), torch.zeros(x_shape[0], dtype=torch.long))


def test_label_for_an_unconditional_model_is_an_error():
    m = VideoUNet(VideoUNetConfig(**TINY))
    with pytest.raises(ValueError, match="unconditional"):
        m(torch.zeros(1, 3, 1, 8, 8), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("y, match", [
    (torch.tensor([-1, 0]), r"values in 0\.\.5 \(5 is the null class\); got shape \(2,\), dtype torch.int64, values in -1\.\.0"),
    (torch.tensor([6, 0]), r"got shape \(2,\), dtype torch.int64, values in 0\.\.6"),
    (torch.tensor([1]), r"shape \(B,\)=\(2,\) .* got shape \(1,\)"),
    (torch.tensor([1.0, 2.0]), r"integer class labels .* dtype torch.float32"),
])
def test_bad_labels_name_y_and_the_allowed_range(y, match):
    m = VideoUNet(VideoUNetConfig(num_classes=5, **TINY))
    with pytest.raises(ValueError, match=match):
        m(torch.zeros(2, 3, 1, 8, 8), torch.zeros(2, dtype=torch.long), y)
    m(torch.zeros(2, 3, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.tensor([0, 5]))  # 5: the null class
