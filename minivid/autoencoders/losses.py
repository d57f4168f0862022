r"""Autoencoder losses shared by PVDM's triplane autoencoder (P6) and the 3D VAEs (Reducio R2, CogVideoX):
an LPIPS-style perceptual distance, 2D and 3D PatchGAN discriminators, hinge GAN losses and VQGAN's
adaptive GAN weight.

**Perceptual loss and weights.** LPIPS compares unit-normalised VGG16 activations at five depths, weighted
per channel by learned 1x1 "lin" layers. It needs two sets of pretrained weights, and none can be
downloaded here: the VGG16 ImageNet backbone (torchvision's ``vgg16-397923af.pth``) and the LPIPS lin
layers (``weights/v0.1/vgg.pth``, which ships inside the ``lpips`` pip package). :class:`PerceptualLoss`
loads both from paths the user gives. Without them it refuses to be built, unless the caller asks for a
randomly initialised network explicitly (``allow_random=True``: random VGG features still give a crude
image distance, but it is not LPIPS and the numbers are not comparable with the papers').
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from einops import rearrange
from torch import nn

# VGG16 `features` indices where LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (exclusive ends)
_VGG_TAPS = (4, 9, 16, 23, 30)
_VGG_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' fixed input scaling for images in [-1, 1] (ImageNet statistics mapped to that range)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _frames(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Images (B, C, H, W) pass through; videos (B, C, T, H, W) become (B*T, C, H, W)."""
    if x.ndim == 4:
        return x, 1
    if x.ndim == 5:
        return rearrange(x, "b c t h w -> (b t) c h w"), x.shape[2]
    raise ValueError(f"expected images (B, C, H, W) or videos (B, C, T, H, W), got shape {tuple(x.shape)}")


class PerceptualLoss(nn.Module):
    """LPIPS-style distance between images or videos in [-1, 1]; returns (B,) (videos: mean over frames).

    Args:
        vgg_weights: path to a torchvision VGG16 state dict (``features.*`` keys are used).
        lin_weights: path to LPIPS' lin-layer weights (keys ``lin{i}.model.1.weight``, as in the ``lpips``
            package's ``weights/v0.1/vgg.pth``).
        allow_random: build with random weights when no path is given (not LPIPS; for tests/teaching).

    Or load a complete module saved by minivid with :meth:`from_file`. The network is frozen.
    """

    def __init__(self, vgg_weights: str | Path | None = None, lin_weights: str | Path | None = None,
                 allow_random: bool = False):
        super().__init__()
        if (vgg_weights is None or lin_weights is None) and not allow_random:
            missing = [n for n, v in (("vgg_weights", vgg_weights), ("lin_weights", lin_weights)) if v is None]
            raise ValueError(
                f"PerceptualLoss needs pretrained weights ({', '.join(missing)} not given) and none can be "
                "downloaded at run time: pass vgg_weights=<torchvision vgg16 .pth> and lin_weights=<lpips "
                "weights/v0.1/vgg.pth>, or PerceptualLoss.from_file(<minivid safetensors>), or set "
                "allow_random=True for a randomly initialised network (not LPIPS)."
            )
        # VGG16's convolutional trunk only (building torchvision's whole vgg16 would also allocate its
        # 120M-parameter classifier); same layers and indices as torchvision.models.vgg16().features
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[: _VGG_TAPS[-1]]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _VGG_CHANNELS)
        if allow_random and lin_weights is None:
            for lin in self.lins:  # LPIPS lin weights are non-negative; random ones should be too
                nn.init.uniform_(lin.weight, 0.0, 1.0 / lin.in_channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        if vgg_weights is not None:
            self._load_vgg(vgg_weights)
        if lin_weights is not None:
            self._load_lins(lin_weights)
        self.requires_grad_(False).eval()

    @staticmethod
    def _read(path: str | Path) -> dict:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no weights file at {str(path)!r}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)

    def _load_vgg(self, path: str | Path) -> None:
        state = self._read(path)
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        wanted = set(self.features.state_dict())
        if not wanted <= set(feats):
            raise ValueError(f"{path}: not a torchvision VGG16 state dict (missing features.{sorted(wanted - set(feats))[:3]})")
        self.features.load_state_dict({k: feats[k] for k in wanted})

    def _load_lins(self, path: str | Path) -> None:
        state = self._read(path)
        for i, lin in enumerate(self.lins):
            key = f"lin{i}.model.1.weight"
            if key not in state:
                raise ValueError(f"{path}: not an LPIPS lin-weights file (missing {key!r})")
            lin.weight.data.copy_(state[key])

    @classmethod
    def from_file(cls, path: str | Path) -> "PerceptualLoss":
        """Load a module saved with ``minivid.utils.save_weights(perceptual_loss, path)``."""
        model = cls(allow_random=True)
        model.load_state_dict(cls._read(path))
        return model.requires_grad_(False).eval()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
        x, t = _frames(pred)
        y, _ = _frames(target)
        if x.shape[1] != 3:
            raise ValueError(f"PerceptualLoss takes RGB inputs (3 channels), got {x.shape[1]}")
        if min(x.shape[-2:]) < 16:
            raise ValueError(f"PerceptualLoss needs frames of at least 16x16 (VGG pools 4 times), got {tuple(x.shape[-2:])}")
        h = torch.cat([x, y]).to(self.shift.dtype)
        h = (h - self.shift) / self.scale
        total = 0.0
        start = 0
        for lin, end in zip(self.lins, _VGG_TAPS):
            h = self.features[start:end](h)
            start = end
            fx, fy = h.chunk(2)
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit length along channels
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy) ** 2).mean(dim=(2, 3))  # (N, 1): spatial average
        return total[:, 0].reshape(-1, t).mean(1)


def _check_patch_input(name: str, num_layers: int, shape) -> None:
    """A PatchGAN halves H and W ``num_layers`` times, then two 4x4 convolutions (stride 1, padding 1) take one
    pixel off each: the frames must be at least 3 * 2**num_layers on each side to leave one logit."""
    minimum = 3 * 2**num_layers
    if min(shape[-2:]) < minimum:
        raise ValueError(f"{name}(num_layers={num_layers}) needs frames of at least {minimum}x{minimum} "
                         f"(3 * 2**num_layers), got {shape[-2]}x{shape[-1]} (input shape {tuple(shape)}); "
                         "use larger frames or fewer layers")


class PatchDiscriminator2D(nn.Module):
    """A PatchGAN (pix2pix) discriminator: strided 4x4 convolutions whose output is a grid of logits, one
    per overlapping patch. Videos (B, C, T, H, W) are judged frame by frame -> (B, 1, T, h, w).
    BatchNorm, as in pix2pix and VQGAN: with fixed statistics (eval) each logit depends only on its patch
    (a GroupNorm would pool statistics over the whole image and break that locality)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for n in range(1, num_layers + 1):
            c_next = channels * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(c, c_next, 4, stride, 1, bias=False), nn.BatchNorm2d(c_next),
                       nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.num_layers = num_layers

    def check_input(self, shape) -> None:
        """A ValueError unless ``shape`` is an image (B, C, H, W) or video (B, C, T, H, W) batch large enough."""
        if len(shape) not in (4, 5):
            raise ValueError(f"PatchDiscriminator2D takes images (B, C, H, W) or videos (B, C, T, H, W), got shape "
                             f"{tuple(shape)}")
        _check_patch_input("PatchDiscriminator2D", self.num_layers, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x.shape)
        if x.ndim == 5:
            b = x.shape[0]
            return rearrange(self.net(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", b=b)
        return self.net(x)


class PatchDiscriminator3D(nn.Module):
    """A 3D PatchGAN for videos (B, C, T, H, W): like the 2D one with (3, 4, 4) kernels that also look at
    neighbouring frames (temporal stride 1, so any frame count works), so it can judge motion."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1")
        k, p = (3, 4, 4), (1, 1, 1)
        layers: list[nn.Module] = [nn.Conv3d(in_channels, channels, k, (1, 2, 2), p), nn.LeakyReLU(0.2)]
        c = channels
        for n in range(1, num_layers + 1):
            c_next = channels * min(2**n, 8)
            stride = (1, 2, 2) if n < num_layers else (1, 1, 1)
            layers += [nn.Conv3d(c, c_next, k, stride, p, bias=False), nn.BatchNorm3d(c_next),
                       nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv3d(c, 1, k, 1, p))
        self.net = nn.Sequential(*layers)
        self.num_layers = num_layers

    def check_input(self, shape) -> None:
        """A ValueError unless ``shape`` is a video batch (B, C, T, H, W) with frames large enough."""
        if len(shape) != 5:
            raise ValueError(f"PatchDiscriminator3D takes videos (B, C, T, H, W), got shape {tuple(shape)}")
        _check_patch_input("PatchDiscriminator3D", self.num_layers, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x.shape)
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss (P6): ½ (E[relu(1 − D(x))] + E[relu(1 + D(x̂))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator (autoencoder) side of the hinge GAN: −E[D(x̂)]."""
    return -logits_fake.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's balance: λ = ‖∇_w L_rec‖ / (‖∇_w L_G‖ + 1e-4) at the decoder's last weight w, clamped to
    [0, max_weight] and detached, so the GAN gradient never swamps reconstruction."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, max_weight).detach()
