"""FVD: the Fréchet distance against closed forms and scipy in float64, and the I3D features' behaviour under
corruption (noise, blur, shuffled frames) on MiniSprites clips."""

import copy
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minivid.data import MiniSprites
from minivid.metrics import FVDResult, frechet_distance, frechet_distance_from_stats, fvd, i3d_logits
from minivid.metrics.fvd import gaussian_stats, prepare_clips


def _rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


@pytest.mark.parametrize("near_singular", [False, True])
def test_frechet_distance_closed_form_for_commuting_covariances(near_singular):
    # Sigma_a = Q diag(a) Q^T, Sigma_b = Q diag(b) Q^T commute: d = |mu_a - mu_b|^2 + sum (sqrt(a) - sqrt(b))^2
    d, rng = 12, np.random.default_rng(1)
    q = _rotation(d, 2)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    if near_singular:
        a[:5], b[:3] = 0.0, 1e-12  # rank-deficient, as with fewer clips than 400 logits
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    want = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet_distance_from_stats(mu_a, (q * a) @ q.T, mu_b, (q * b) @ q.T)
    # square roots of eigenvalues at round-off level (~1e-16 * |Sigma|) contribute ~1e-8 each
    assert got == pytest.approx(want, rel=1e-7 if near_singular else 1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_full_rank_covariances():
    from scipy import linalg

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((200, 8)) @ rng.standard_normal((8, 8)), rng.standard_normal((150, 8)) + 0.5
    mu_a, s_a = x.mean(0), np.cov(x, rowvar=False)
    mu_b, s_b = y.mean(0), np.cov(y, rowvar=False)
    ref = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(ref, rel=1e-5)


def test_frechet_distance_of_a_set_with_itself_is_zero_even_when_singular():
    x = np.random.default_rng(4).standard_normal((30, 400))  # 30 samples, 400 dimensions: rank 29
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6 * np.trace(np.cov(x, rowvar=False)))
    y = x + 1.0  # a pure shift: exactly |shift|^2 = 400 (371 zero eigenvalues cost ~1e-7 relative)
    assert frechet_distance(x, y) == pytest.approx(400.0, rel=1e-6)
    mu, s = gaussian_stats(x)
    assert np.allclose(s, np.cov(x, rowvar=False)) and np.allclose(mu, x.mean(0))


def test_bad_inputs_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\].*\(x \+ 1\) / 2"):
        i3d_logits(torch.full((2, 3, 16, 8, 8), -0.5), weights=tmp_path / "missing")  # range checked first
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        i3d_logits(torch.zeros(2, 16, 8, 8))
    with pytest.raises(ValueError, match="resize='nearest'"):
        i3d_logits(torch.zeros(2, 3, 16, 8, 8), resize="nearest")
    with pytest.raises(ValueError, match="num_frames=4"):
        i3d_logits(torch.zeros(2, 3, 16, 8, 8), num_frames=4)
    with pytest.raises(ValueError, match="8 frames"):
        i3d_logits(torch.zeros(2, 3, 8, 8, 8), num_frames=None)
    with pytest.raises(ValueError, match="batch_size"):
        i3d_logits(torch.zeros(2, 3, 16, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((3, 4)), np.zeros((3, 5)))


def test_protocol_resizes_rescales_and_repeats_frames():
    v = torch.rand(2, 3, 8, 32, 48, generator=torch.Generator().manual_seed(0))
    x = prepare_clips(v, "bilinear", 16)
    assert x.shape == (2, 3, 16, 224, 224) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, :, 0], x[:, :, 1]) and torch.equal(x[:, :, 14], x[:, :, 15])  # 8 -> 16: each twice
    ref = F.interpolate(v[:, :, 3] * 2 - 1, size=(224, 224), mode="bilinear", align_corners=False)
    assert torch.allclose(x[:, :, 6], ref, atol=1e-6)
    c = prepare_clips(v, "center_crop", 16)  # 32 x 48 -> 224 x 336 -> centre 224 x 224
    full = F.interpolate(v[:, :, 3] * 2 - 1, size=(224, 336), mode="bilinear", align_corners=False)
    assert torch.allclose(c[:, :, 6], full[..., 56:280], atol=1e-6)
    long = torch.rand(1, 3, 20, 16, 16)
    assert torch.equal(prepare_clips(long, "bilinear", 16)[:, :, -1],
                       prepare_clips(long[:, :, :16], "bilinear", 16)[:, :, -1])  # longer clips: first 16 frames


# ------------------------------------------------------------------------------- I3D features of real clips
N = 3  # 6 sets x 3 clips of 10 frames (I3D's cost grows with frames): about 15 s on one CPU thread
T = 10


def _blur(v, sigma):
    """Gaussian blur of every frame (7 taps, reflect-101 border): Tora's T5 filter, normalised to sum 1."""
    from minivid.conditioning.trajectory import blur_maps, gaussian_kernel

    k = gaussian_kernel(7, sigma)
    return blur_maps(v, k / k.sum())


@pytest.fixture(scope="module")
def logits():
    d = MiniSprites(num_videos=N, size=32, num_frames=T, split="test", seed=0)
    real = (torch.stack([d[i]["video"] for i in range(N)]) + 1) / 2  # [0, 1]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(real.shape, generator=g)
    perm = torch.randperm(T, generator=g)
    sets = {"real": real, "noise 0.05": (real + 0.05 * noise).clamp(0, 1), "noise 0.2": (real + 0.2 * noise).clamp(0, 1),
            "blur 0.7": _blur(real, 0.7), "blur 2": _blur(real, 2.0), "shuffled": real[:, :, perm]}
    return {k: i3d_logits(v, batch_size=4, num_frames=None) for k, v in sets.items()}


def test_fvd_grows_with_noise_blur_and_shuffled_frames(logits):
    real = logits["real"]
    fd = {k: frechet_distance(real, v) for k, v in logits.items()}
    assert fd["real"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < fd["noise 0.05"] < fd["noise 0.2"]
    assert 0 < fd["blur 0.7"] < fd["blur 2"]
    assert fd["shuffled"] > 0.25 * fd["blur 2"]  # frames out of order: the same pictures, other motion


def test_logits_are_stable_under_tiny_noise_and_deterministic(logits):
    d = MiniSprites(num_videos=1, size=32, num_frames=T, split="test", seed=0)
    real = (torch.stack([d[0]["video"]]) + 1) / 2
    again = i3d_logits(real, num_frames=None)
    assert torch.allclose(again, logits["real"][:1], atol=1e-4)  # another batch size, same numbers
    nudged = i3d_logits((real + 1e-3 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1),
                        num_frames=None)
    rel = (nudged - again).norm() / again.norm()
    assert rel < 0.1  # measured 0.03 for noise of 1e-3 (a quarter of one 8-bit level)
    spread = (logits["real"] - logits["real"].mean(0)).norm(dim=1).mean() / logits["real"].norm(dim=1).mean()
    assert rel < 0.1 * spread  # tiny noise moves a clip far less than clips differ from each other


def test_fvd_result_reports_the_clip_counts(logits):
    r = FVDResult(frechet_distance(logits["real"], logits["blur 2"]), N, N)
    assert str(r).startswith("FVD ") and f"({N} vs {N} clips, 16 frames, bilinear to 224)" in str(r)
    assert float(r) == r.fvd and r.as_dict()["clips_a"] == N
    v = torch.rand(2, 3, 9, 16, 16, generator=torch.Generator().manual_seed(5))
    out = fvd(v, v.flip(0), num_frames=None)
    assert out.clips_a == out.clips_b == 2 and out.num_frames is None and out.fvd == pytest.approx(0.0, abs=1e-6)


class _PrecisionProbe(torch.nn.Module):
    """Stands in for I3D: records cuDNN's float32 convolution precision at each call."""

    def __init__(self, fail=False, legacy=False):
        super().__init__()
        self.seen, self.fail, self.legacy = [], fail, legacy

    def forward(self, x):
        if self.legacy:
            self.seen.append("tf32" if torch.backends.cudnn.allow_tf32 else "ieee")
        else:
            self.seen.append(torch.backends.cudnn.conv.fp32_precision)
        if self.fail:
            raise RuntimeError("probe failure")
        return torch.zeros(len(x), 400)


@pytest.mark.parametrize("fail", [False, True])
def test_i3d_runs_its_convolutions_in_ieee_fp32_and_restores_the_callers_setting(monkeypatch, fail):
    """The protocol's float32 on a GPU: cuDNN's TF32 default is switched off for I3D's calls only, and the
    caller's setting comes back afterwards, also when the model raises."""
    fvd_module = importlib.import_module("minivid.metrics.fvd")  # the package exports a function of that name

    probe = _PrecisionProbe(fail)
    monkeypatch.setattr(fvd_module, "load_i3d", lambda weights, dev: probe)
    before = torch.backends.cudnn.conv.fp32_precision
    assert before != "ieee"  # PyTorch's default ("tf32"), so the switch is visible
    clips = torch.rand(3, 3, 16, 8, 8)
    if fail:
        with pytest.raises(RuntimeError, match="probe failure"):
            i3d_logits(clips, device="cpu", batch_size=2)
    else:
        assert i3d_logits(clips, device="cpu", batch_size=2).shape == (3, 400)
    assert probe.seen == (["ieee"] if fail else ["ieee", "ieee"])
    assert torch.backends.cudnn.conv.fp32_precision == before


def test_i3d_switches_the_legacy_tf32_flag_on_pytorch_without_fp32_precision(monkeypatch):
    """PyTorch before 2.9 (the lent GPU machines bring their own) has only torch.backends.cudnn.allow_tf32: it is
    switched off for I3D's calls and restored after."""
    fvd_module = importlib.import_module("minivid.metrics.fvd")
    probe = _PrecisionProbe(legacy=True)
    monkeypatch.setattr(fvd_module, "load_i3d", lambda weights, dev: probe)
    monkeypatch.setattr(fvd_module, "_cudnn_conv_flags", lambda: None)
    before = torch.backends.cudnn.allow_tf32
    assert before  # PyTorch's default
    i3d_logits(torch.rand(2, 3, 16, 8, 8), device="cpu")
    assert probe.seen == ["ieee"] and torch.backends.cudnn.allow_tf32 == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_i3d_logits_equal_the_cpus_to_float32_rounding(monkeypatch):
    """With IEEE float32 convolutions a GPU's I3D logits equal the CPU's to float32 rounding (randomly
    initialised I3D, the same weights on both devices: the machines with a GPU lack the Kinetics weights)."""
    fvd_module = importlib.import_module("minivid.metrics.fvd")  # the package exports a function of that name
    from minivid.metrics.i3d import I3D

    torch.manual_seed(0)
    cpu_model = I3D().eval().requires_grad_(False)
    models = {"cpu": cpu_model, "cuda": copy.deepcopy(cpu_model).cuda()}
    monkeypatch.setattr(fvd_module, "load_i3d", lambda weights, dev: models[dev.type])
    clips = torch.rand(4, 3, 16, 32, 32, generator=torch.Generator().manual_seed(1))
    on_cpu = i3d_logits(clips, device="cpu")
    on_gpu = i3d_logits(clips, device="cuda")
    scale = on_cpu.abs().max()
    assert (on_gpu - on_cpu).abs().max() <= 1e-4 * scale
