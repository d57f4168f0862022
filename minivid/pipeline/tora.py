r"""Tora at MiniSprites scale (T1-T9): trajectory-controlled video generation, trained and measured.

- **Motion VAE** (T5): the causal 3D VAE (:class:`~minivid.autoencoders.CausalVAE`, C1's blocks) trained on flow
  videos g_vis only (reconstruction, :func:`motion_pool`), frozen afterwards. Its latent grid must be the video
  latent's: Tora's video VAE is the 4 x 8 x 8 CogVideoX VAE and so is its motion VAE; minivid's video latents are the
  zoo's per-frame ``vae2d`` (1 x 4 x 4, the latent space on which the zoo's denoisers make sprites; the zoo's
  4 x 8 x 8 ``causal-vae`` came later: the full system's ``cpu-causal`` preset uses it), so the motion VAE is the
  same causal 3D VAE class configured 1 x 4 x 4 (``temporal_factor=1``; its convolutions still see the past frames).
- **Flow videos** (T4-T5, T8): dense ones from MiniSprites' exact per-pixel motion (stage 1's "optical flow") and
  sparse ones from the centre paths of 1..N sprites (stage 2), blurred by a Gaussian and coloured by the Middlebury
  wheel (:mod:`minivid.conditioning.trajectory`). The release's blur (sigma 10 at 480p) scaled to 32 px is sigma
  0.67 px, smaller than a sprite; the recipes use ``TORA_BLUR`` = (9, 1.5), about half a sprite's radius.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..conditioning.motion import FUSERS, MotionGuidance, MotionGuidanceConfig
from ..nn import Model, ModelConfig
from ..transformers import STDiT, STDiTConfig
from ..conditioning.trajectory import maps_to_video, rescale_points, sample_sparse, sprite_flow, trajectory_maps
from ..data import MiniSprites
from ..metrics.sprites import sprite_check
from ..metrics.trajectory import path_errors
from ..utils.validation import check_choice, check_device, check_int, check_number

SEED = 0
TORA_SIZE, TORA_FRAMES = 32, 8
TORA_BLUR = (9, 1.5)  # (kernel size, sigma) in pixels at 32 px; see the module docstring
FLOW_KINDS = ("dense", "sparse", "mixed")


def scene_flow_maps(data: MiniSprites, i: int, kind: str, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ``i`` of ``data``: (displacement maps (L, 2, H, W), the per-frame centre paths (k, L, 2) they describe).
    ``kind="dense"``: every sprite pixel's exact motion (all sprites' paths); ``"sparse"``: the centre paths of 1..N
    randomly chosen sprites (T8 stage 2)."""
    check_choice("kind", kind, ("dense", "sparse"))
    item = data[i]
    mask = item["sprite_mask"]
    if kind == "dense":
        return sprite_flow(data.scene(i)), item["centers"][mask]
    paths = sample_sparse(item["centers"], mask, generator)
    return trajectory_maps(paths, data.height, data.width), paths


def motion_pool(n: int, size: int = TORA_SIZE, frames: int = TORA_FRAMES, kind: str = "mixed", split: str = "train",
                seed: int = SEED, blur: tuple[int, float] = TORA_BLUR, num_sprites=(1, 3)) -> torch.Tensor:
    """``n`` flow videos g_vis (n, 3, T, H, W) in [-1, 1] of MiniSprites clips (float16): dense, sparse, or both
    alternately (``"mixed"``: even items dense, odd sparse). Dense maps are not blurred (they already cover the
    sprite), sparse ones are (T5)."""
    n = check_int("n", n, 1)
    check_choice("kind", kind, FLOW_KINDS)
    data = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed, num_sprites=num_sprites)
    g = torch.Generator().manual_seed(seed + 1)
    out = torch.empty(n, 3, frames, size, size, dtype=torch.float16)
    for i in range(n):
        k = kind if kind != "mixed" else ("dense", "sparse")[i % 2]
        maps, _ = scene_flow_maps(data, i, k, g)
        out[i] = maps_to_video(maps, (1, 1.0) if k == "dense" else blur).half()
    return out


def flow_weight(video: torch.Tensor, weight: float = 20.0) -> torch.Tensor:
    """Per-pixel loss weights of flow videos (B, 3, T, H, W): 1 + ``weight`` on marked (non-white) pixels. A flow
    video is white except for the marks, so an unweighted reconstruction loss is minimised by a white frame first
    (measured: 200 steps of the unweighted recipe stay at the all-white output's 23.0 dB)."""
    return 1 + weight * (video < 0.99).any(1, keepdim=True).to(video.dtype)


def mark_centres(videos: torch.Tensor) -> torch.Tensor:
    """The centre (x, y) of the colour mass (1 - g_vis, summed over channels) of every frame of flow videos
    (B, 3, T, H, W) -> (B, T, 2); NaN for a white frame."""
    mass = (1 - videos.float().clamp(-1, 1)).sum(1) / 2  # (B, T, H, W)
    h, w = mass.shape[-2:]
    ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    total = mass.sum((-2, -1))
    x = (mass.sum(-2) * xs).sum(-1) / total
    y = (mass.sum(-1) * ys).sum(-1) / total
    out = torch.stack([x, y], -1)
    out[total < 1e-3] = float("nan")
    return out


@torch.no_grad()
def motion_vae_metrics(model, test: torch.Tensor) -> dict:
    """Held-out scores of a motion VAE on flow videos ``test`` (B, 3, T, H, W): PSNR over each whole clip (a per-frame
    mean would count the white first frame as infinitely good) beside the all-white output; the mean absolute error on
    the marked pixels (where the information is) beside white's; and the distance in pixels between the centre of the
    marks in the reconstruction and in the input, frames 1.. of one-object (sparse) clips."""
    from ..metrics.trajectory import trajectory_error

    model.eval()
    rec = torch.cat([model.reconstruct(test[i:i + 16].float()).clamp(-1, 1) for i in range(0, len(test), 16)])
    x = test.float()

    def clip_psnr(a):
        return float((10 * torch.log10(4 / (a - x).pow(2).mean((1, 2, 3, 4)))).mean())

    marked = (x < 0.99).any(1, keepdim=True).expand_as(x)
    white = torch.ones_like(x)
    return {"clip_psnr": clip_psnr(rec), "clip_psnr_all_white": clip_psnr(white),
            "marked_l1": float((rec - x).abs()[marked].mean()), "marked_l1_all_white": float((white - x)[marked].mean()),
            "mark_centre_error_px": trajectory_error(mark_centres(rec)[:, 1:], mark_centres(x)[:, 1:]),
            "test_clips": len(test), "input_shape": list(test.shape[1:]),
            "latent_shape": list(model.latent_shape(tuple(test[:1].shape))[1:])}


def motion_vae_config():
    from ..autoencoders import CausalVAEConfig
    return CausalVAEConfig(spatial_factor=4, temporal_factor=1, latent_channels=4, channels=16, channel_mult=(1, 2, 2),
                           num_res_blocks=1, norm_groups=8, init_logvar=-6.0)


# ---------------------------------------------------------------------------------------------- the model
def _default_base() -> STDiTConfig:
    # vae2d latents of 32 px x 8 frames: (4, 8, 8, 8); patch 2 -> 8 frames x 4 x 4 tokens; T3's alternating blocks
    return STDiTConfig(in_channels=4, patch_size=2, dim=64, depth=4, heads=4, text_dim=32, layout="alternating",
                       fuser_at="temporal")


def _default_motion() -> MotionGuidanceConfig:
    return _default_motion_for("adanorm")


def _default_motion_for(fuser: str) -> MotionGuidanceConfig:
    return MotionGuidanceConfig(motion_channels=4, dim=64, depth=4, patch_size=2, motion_dim=32, fuser=fuser)


@dataclass
class ToraConfig(ModelConfig):
    """``base``: the ST-DiT (T1-T3); ``motion``: the extractor and fusers (T6-T7), or None for the base alone (the
    no-trajectory baseline). ``first_frame_channels``: besides being the un-noised frame 0 (T8), the first frame's
    latent is repeated over the frames and concatenated to every frame's channels (``base.cond_channels`` must then
    be ``base.in_channels``), as SVD and CogVideoX-I2V condition on an image; Tora itself does not."""

    base: STDiTConfig = field(default_factory=_default_base)
    motion: MotionGuidanceConfig | None = field(default_factory=_default_motion)
    first_frame_channels: bool = False

    def __post_init__(self):
        if not isinstance(self.base, STDiTConfig):
            raise ValueError(f"base={self.base!r} must be an STDiTConfig")
        if not isinstance(self.first_frame_channels, bool):
            raise ValueError(f"first_frame_channels={self.first_frame_channels!r} must be True or False")
        want = self.base.in_channels if self.first_frame_channels else 0
        if self.base.cond_channels != want:
            raise ValueError(f"base.cond_channels={self.base.cond_channels} must be {want} with first_frame_channels="
                             f"{self.first_frame_channels} (the first frame's latent, repeated over the frames)")
        if self.motion is not None:
            if not isinstance(self.motion, MotionGuidanceConfig):
                raise ValueError(f"motion={self.motion!r} must be a MotionGuidanceConfig or None")
            for k in ("dim", "depth", "patch_size"):
                if getattr(self.motion, k) != getattr(self.base, k):
                    raise ValueError(f"motion.{k}={getattr(self.motion, k)} must equal base.{k}="
                                     f"{getattr(self.base, k)} (one fuser per ST-DiT block, on its token grid)")


class Tora(Model):
    """Tora (T1-T8): ``model(x, t, motion=None, text=None, text_mask=None)``: x (B, C, T, H, W) video latents, motion
    (B, C_m, T, H, W) the motion VAE's scaled latents of g_vis (None: the base alone), text (B, L, text_dim) (None: one
    zero token, the zoo model has no caption) -> the v-prediction."""

    config_class = ToraConfig

    def __init__(self, config: ToraConfig | None = None, **fields):
        super().__init__(config, **fields)
        self.base = STDiT(self.config.base)
        self.guidance = MotionGuidance(self.config.motion) if self.config.motion is not None else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, motion: torch.Tensor | None = None,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        if text is None:
            text = x.new_zeros(x.shape[0], 1, self.config.base.text_dim)
        # frame 0 of x is the clean first-frame latent in training and sampling (T8)
        kw = {"cond": x[:, :, :1].expand_as(x)} if self.config.first_frame_channels else {}
        if motion is None:
            return self.base(x, t, text, text_mask, **kw)
        if self.guidance is None:
            raise ValueError("this Tora has no motion guidance (config.motion=None): call it without motion")
        if not isinstance(motion, torch.Tensor) or motion.shape[0] != x.shape[0] or motion.shape[2:] != x.shape[2:]:
            got = tuple(motion.shape) if isinstance(motion, torch.Tensor) else type(motion).__name__
            raise ValueError(f"motion must be motion latents (B, C_m, T, H, W) on the video latents' grid "
                             f"{(x.shape[0], '...', *x.shape[2:])}, got {got}")
        return self.base(x, t, text, text_mask, fuser=self.guidance.fusers, motion_features=self.guidance(motion), **kw)

    def trainable(self, which: str) -> list[torch.nn.Parameter]:
        """T8: the parameters a stage trains, the others frozen (``requires_grad``): ``"all"``; ``"temporal"`` (the
        extractor, the fusers and the ST-DiT's temporal blocks, as the paper); ``"motion"`` (extractor and fusers)."""
        check_choice("which", which, ("all", "temporal", "motion"))
        for p in self.parameters():
            p.requires_grad_(which == "all")
        if which != "all":
            if self.guidance is None:
                raise ValueError(f"which={which!r} needs motion guidance (config.motion is None)")
            keep = list(self.guidance.parameters())
            if which == "temporal":
                kinds = self.config.base.block_kinds
                keep += [p for j, b in enumerate(self.base.blocks) if kinds[j] in ("temporal", "factorised")
                         for p in b.parameters()]
            for p in keep:
                p.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------- data for training
@dataclass
class ToraData:
    """Scaled latents of ``n`` MiniSprites clips: ``video`` (n, C, T, h, w), their ``dense`` and ``sparse`` motion
    latents (the motion VAE's, T5), the ``null`` motion latent (of an all-white g_vis: no trajectory) (1, C_m, T, h, w),
    and the clips' sparse ``paths`` (a list of (k, T, 2) centre paths), sprite ``colors`` (n, S) and first frames
    ``first`` (n, 3, H, W) in [-1, 1] (float16; another frame with ``tora_data(image_frame=)``). ``dense`` is None when the data was made without it
    (``tora_data(..., dense=False)``), ``sparse`` and ``null`` when it was made without a motion VAE
    (``motion_space=None``: the paths alone)."""

    video: torch.Tensor
    dense: torch.Tensor | None
    sparse: torch.Tensor | None
    null: torch.Tensor | None
    paths: list
    colors: torch.Tensor
    first: torch.Tensor | None = None


@torch.no_grad()
def tora_data(space, motion_space, n: int, split: str = "train", seed: int = SEED, num_sprites=(1, 2),
              blur: tuple[int, float] = TORA_BLUR, size: int = TORA_SIZE, frames: int = TORA_FRAMES,
              chunk: int = 256, dense: bool = True, motion_size: int | None = None, image_frame: int = 0) -> ToraData:
    """Encode ``n`` clips and their dense and sparse flow videos with the frozen VAEs (``space``: the video latent
    space, ``motion_space``: the motion VAE's), in chunks of ``chunk`` clips. ``dense=False`` skips the dense flow
    (users that train on sparse paths only); the other fields are the same either way. ``motion_space=None`` (with
    ``dense=False``) encodes no flow: the paths alone, for a model without trajectory guidance. ``motion_size``: the
    side of the sparse flow videos (default ``size``; the paths are rescaled to it, ``paths`` stay in the clip's
    pixels), for a motion VAE whose latent grid should match a video VAE of another spatial factor; dense flow needs
    ``size``. ``image_frame``: the frame kept as ``first`` (default 0; the Reducio VAE's content frame for the full
    system on it). The fields are on the CPU, wherever the VAEs run."""
    n = check_int("n", n, 1)
    image_frame = check_int("image_frame", image_frame, 0)
    if image_frame >= frames:
        raise ValueError(f"image_frame={image_frame} must be a frame of the clips (0 .. {frames - 1})")
    msize = size if motion_size is None else check_int("motion_size", motion_size, 1)
    if motion_space is None and dense:
        raise ValueError("motion_space=None encodes no flow: pass dense=False")
    if dense and msize != size:
        raise ValueError(f"motion_size={msize}: the dense flow is drawn at the clip's size {size}; pass dense=False "
                         "or motion_size=None")
    data = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed, num_sprites=num_sprites)
    g = torch.Generator().manual_seed(seed + 2)
    video, dense_latents, sparse, paths, colors, first = [], [], [], [], [], []
    for lo in range(0, n, chunk):
        idx = range(lo, min(n, lo + chunk))
        items = [data[i] for i in idx]
        clips = torch.stack([it["video"] for it in items])
        video.append(space.encode(clips).cpu())
        first.append(clips[:, :, image_frame].half())
        colors.append(torch.stack([it["labels"]["color"] for it in items]))
        if dense:
            d = torch.stack([sprite_flow(data.scene(i)) for i in idx])
            dense_latents.append(motion_space.encode(maps_to_video(d, (1, 1.0))).cpu())
        s_maps = []
        for it in items:
            p = sample_sparse(it["centers"], it["sprite_mask"], g)
            paths.append(p)
            if motion_space is not None:
                s_maps.append(trajectory_maps(p if msize == size else rescale_points(p, msize / size), msize, msize))
        if motion_space is not None:
            sparse.append(motion_space.encode(maps_to_video(torch.stack(s_maps), blur)).cpu())
    if motion_space is None:
        return ToraData(torch.cat(video), None, None, None, paths, torch.cat(colors), torch.cat(first))
    null = motion_space.encode(torch.ones(1, 3, frames, msize, msize)).cpu()
    return ToraData(torch.cat(video), torch.cat(dense_latents) if dense else None, torch.cat(sparse), null, paths,
                    torch.cat(colors), torch.cat(first))


@dataclass
class ToraStage:
    """One stage of T8: ``steps`` updates with motion latents ``flow`` ("dense", "sparse", or None: the base alone,
    no motion) training ``trainable`` ("all", "temporal", "motion"; see :meth:`Tora.trainable`)."""

    steps: int
    flow: str | None
    trainable: str = "temporal"

    def __post_init__(self):
        check_int("steps", self.steps, 1)
        if self.flow is not None:
            check_choice("flow", self.flow, ("dense", "sparse"))
        check_choice("trainable", self.trainable, ("all", "temporal", "motion"))


def train_tora(model: Tora, data: ToraData, stages: list[ToraStage], batch: int = 32, lr: float = 1e-3,
               motion_dropout: float = 0.1, progress: bool = True, log=print, device: torch.device | str = "cpu"
               ) -> Tora:
    """T8 on ``data``: each stage a fresh AdamW over its trainable parameters (warm-up, cosine decay, EMA), v-prediction
    on the zero-terminal-SNR schedule (D10) with explicit uniform timesteps (D9), frame 0 left un-noised (image
    conditioning, T8) and out of the loss, the motion latents replaced by the null (no-trajectory) ones with
    probability ``motion_dropout`` (classifier-free guidance on the trajectory). Returns the EMA model, on
    ``device``: the model is moved there and each batch is sent there from the CPU-side data; the random draws are
    the CPU's, so a CUDA run sees the same batches, timesteps and noise."""
    from tqdm import tqdm

    from ..diffusion import DiffusionTrainer
    from .text2video import t2v_schedule

    device = check_device("device", device)
    n, _, frames = data.video.shape[:3]
    clean = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    clean[:, 0] = True
    model.to(device)
    g = torch.Generator().manual_seed(SEED)
    for k, stage in enumerate(stages):
        model.trainable(stage.trainable)
        trainer = DiffusionTrainer(model, t2v_schedule(), prediction="v", lr=lr, warmup_steps=min(200, stage.steps // 10),
                                   ema_decay=0.999 if stage.steps >= 2000 else 0.995, seed=SEED + k,
                                   total_steps=stage.steps, grad_clip=1.0)
        bar = tqdm(total=stage.steps, desc=f"Tora stage {k} ({stage.flow or 'base'})", disable=not progress,
                   dynamic_ncols=True, mininterval=5.0)
        for step in range(stage.steps):
            idx = torch.randint(n, (batch,), generator=g)
            kw = {}
            if stage.flow is not None:
                m = getattr(data, stage.flow)[idx]
                drop = torch.rand(batch, generator=g) < motion_dropout
                kw["motion"] = torch.where(drop[:, None, None, None, None], data.null.expand_as(m), m).to(device)
            trainer.step(data.video[idx].to(device), clean_frames=clean, **kw)
            bar.update(1)
            if (step + 1) % max(1, stage.steps // 5) == 0:
                recent = trainer.losses[-50:]
                log(f"  stage {k} ({stage.flow or 'base'}, {stage.trainable}) step {step + 1}/{stage.steps}: "
                    f"loss {sum(recent) / len(recent):.4f}")
        bar.close()
        model.load_state_dict(trainer.ema.state_dict())  # the next stage starts from the EMA weights
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


# ---------------------------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_tora(model: Tora, space, first: torch.Tensor, motion: torch.Tensor | None, null: torch.Tensor | None = None,
                guidance: float = 2.0, steps: int = 25, seed: int = SEED, batch: int = 32,
                frames: int = TORA_FRAMES) -> torch.Tensor:
    """Clips (N, 3, T, H, W) in [-1, 1] from the scaled latents of their first frames ``first`` (N, C, h, w) (T8:
    frame 0 stays the given latent at every step) and motion latents ``motion`` (N, C_m, T, h, w) (None: the base
    model, no trajectory). DPM-Solver++ (D8) from pure noise at SNR 0 over ``steps`` trailing timesteps; with
    ``guidance`` != 1 and ``null`` (the no-trajectory motion latent), classifier-free guidance on the trajectory.
    Runs where the model is (the inputs and the CPU-drawn noise are moved there); returns clips on the CPU."""
    from ..diffusion import dpm_solver_pp_sample, make_timesteps
    from .text2video import t2v_schedule

    if not isinstance(first, torch.Tensor) or first.ndim != 4:
        got = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        raise ValueError(f"first must be first-frame latents (N, C, h, w), got {got}")
    if motion is not None and (motion.ndim != 5 or len(motion) != len(first) or motion.shape[2] != frames
                               or motion.shape[3:] != first.shape[2:]):
        raise ValueError(f"motion must be motion latents (N={len(first)}, C_m, T={frames}, "
                         f"{first.shape[2]}, {first.shape[3]}), got {tuple(motion.shape)}")
    if motion is not None and guidance != 1 and null is None:
        raise ValueError("guidance != 1 needs null, the motion latent of no trajectory (ToraData.null)")
    s = t2v_schedule()
    g = torch.Generator().manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    null = None if null is None else null.to(device)
    out = []
    for lo in range(0, len(first), batch):
        f0 = first[lo:lo + batch].to(device)
        n = len(f0)
        m = None if motion is None else motion[lo:lo + batch].to(device)

        def fn(x, t, f0=f0, m=m, n=n):
            x = torch.cat([f0[:, :, None], x[:, :, 1:]], dim=2)  # T8: the first frame stays clean
            if m is None:
                return model(x, t)
            if guidance == 1:
                return model(x, t, motion=m)
            both = model(torch.cat([x, x]), torch.cat([t, t]), motion=torch.cat([m, null.expand_as(m)]))
            cond, uncond = both[:n], both[n:]
            return uncond + guidance * (cond - uncond)

        x_T = torch.randn((n, first.shape[1], frames, *first.shape[2:]), generator=g).to(device)
        z = dpm_solver_pp_sample(fn, x_T, s, make_timesteps(s, steps, "trailing"), prediction="v")
        z[:, :, 0] = f0
        out.append(space.decode(z).cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- scores and recipe
@torch.no_grad()
def tora_scores(model: Tora, space, test: ToraData, use_motion: bool = True, guidance: float = 2.0) -> dict:
    """Samples for the held-out one-sprite clips ``test`` (their first frames, and their sparse paths unless
    ``use_motion`` is False) scored by T9's trajectory error against the requested paths and the sprite check."""
    paths = torch.stack([p[0] for p in test.paths])  # (N, T, 2): one sprite per clip
    colors = test.colors[:, 0]
    videos = sample_tora(model, space, test.video[:, :, 0], test.sparse if use_motion else None, test.null,
                         guidance=guidance)
    checks = [sprite_check(v) for v in videos]
    return {**path_errors(videos, paths, colors), "sprite_check": sum(c["passed"] for c in checks) / len(checks),
            "clips": len(videos)}


def real_clip_scores(n: int = 64, seed: int = SEED) -> dict:
    """T9's metric on real held-out one-sprite clips: against their own paths (the floor, near 0 px) and against
    another clip's path (shuffled, the chance level)."""
    data = MiniSprites(num_videos=n, size=TORA_SIZE, num_frames=TORA_FRAMES, split="test", seed=seed, num_sprites=1)
    items = [data[i] for i in range(n)]
    videos = torch.stack([it["video"] for it in items])
    paths = torch.stack([it["centers"][0] for it in items])
    colors = torch.stack([it["labels"]["color"][0] for it in items])
    return {"own_paths": path_errors(videos, paths, colors),
            "shuffled_paths": path_errors(videos, paths.roll(1, 0), colors)}


def choose_fuser(scores: dict[str, dict], keep: float = 0.8) -> str:
    """The fuser with the lowest trajectory error among those whose samples pass the sprite check at least ``keep``
    times as often as the best one's (a fuser that wins by destroying the sprites does not win)."""
    best_check = max(s["sprite_check"] for s in scores.values())
    ok = {k: s for k, s in scores.items() if s["sprite_check"] >= keep * best_check}
    return min(ok, key=lambda k: ok[k]["trajectory_error_px"])


def tora_recipe(space, motion_space, base_steps: int, fusers=FUSERS, num_clips: int = 4096, progress: bool = True,
                log=print, first_frame_channels: bool = False, depth: int = 4, lr: float = 1e-3,
                fuser_trainable: str = "temporal", device: torch.device | str = "cpu") -> tuple[Tora, dict]:
    """The zoo's Tora: the base ST-DiT trained on first-frame-conditioned clips (``base_steps``, every parameter), then
    for each fuser a copy of it with motion guidance trained in T8's two stages (dense ``base_steps // 5`` steps, then
    sparse ``base_steps // 2``; by default the extractor, fuser and temporal blocks). Every model is scored on 64
    held-out one-sprite clips; returns the chosen fuser's model (:func:`choose_fuser`) and the table.
    ``first_frame_channels``: see :class:`ToraConfig`; ``depth``: the ST-DiT's blocks (and one fuser per block); ``lr``:
    the peak learning rate of every stage (:func:`train_tora`); ``fuser_trainable``: what the two fuser stages train (:meth:`Tora.trainable`):
    ``"temporal"`` is T8's (extractor, fusers and the ST-DiT's temporal blocks), ``"all"`` also fine-tunes the spatial
    blocks (the zoo's choice: on this scale its sprites keep their colour while they move more often). ``device``:
    where the models train and sample (the VAEs stay where they are)."""
    import copy
    from dataclasses import replace

    base_steps = check_int("base_steps", base_steps, 1)
    depth = check_int("depth", depth, 1)
    lr = check_number("lr", lr, 0.0, 1.0, strict_minimum=True)
    check_choice("fuser_trainable", fuser_trainable, ("all", "temporal", "motion"))
    device = check_device("device", device)
    fusers = tuple(fusers)
    for kind in fusers:
        check_choice("fusers", kind, FUSERS)
    log(f"  encoding {num_clips} training clips and their flow videos")
    data = tora_data(space, motion_space, num_clips)
    test = tora_data(space, motion_space, 64, split="test", num_sprites=1)
    torch.manual_seed(SEED)
    ff = {"first_frame_channels": first_frame_channels,
          "base": replace(_default_base(), depth=depth, cond_channels=4 if first_frame_channels else 0)}
    base = Tora(ToraConfig(motion=None, **ff))
    train_tora(base, data, [ToraStage(base_steps, None, "all")], lr=lr, progress=progress, log=log, device=device)
    table = {"no trajectory": tora_scores(base, space, test, use_motion=False)}
    log(f"  no trajectory: {table['no trajectory']}")
    models = {}
    for kind in fusers:
        torch.manual_seed(SEED)
        model = Tora(ToraConfig(motion=replace(_default_motion_for(kind), depth=depth), **ff))
        model.base.load_state_dict(copy.deepcopy(base.base.state_dict()))
        stages = [ToraStage(max(1, base_steps // 5), "dense", fuser_trainable),
                  ToraStage(max(1, base_steps // 2), "sparse", fuser_trainable)]
        train_tora(model, data, stages, lr=lr, progress=progress, log=log, device=device)
        table[kind] = tora_scores(model, space, test)
        models[kind] = model
        log(f"  {kind}: {table[kind]}")
    chosen = choose_fuser({k: table[k] for k in fusers})
    return models[chosen], {"fuser": chosen, "first_frame_channels": first_frame_channels, "depth": depth, "lr": lr,
                            "fuser_trainable": fuser_trainable,
                            "table": table, "real_clips": real_clip_scores(), "guidance": 2.0,
                            "sampler": "DPM-Solver++(2M), 25 trailing timesteps from SNR 0, frame 0 given",
                            "stages": {"base": base_steps, "dense": max(1, base_steps // 5),
                                       "sparse": max(1, base_steps // 2)}}


# ---------------------------------------------------------------------------------------------- user trajectories
def start_frame(points: torch.Tensor, colors: list[str], shapes: list[str] | None = None, radius: float = 3.5,
                size: int = TORA_SIZE, seed: int = SEED) -> torch.Tensor:
    """A MiniSprites first frame (3, H, W) in [-1, 1] for trajectories ``points`` (K, T, 2): a random muted background
    (seeded) with sprite k of colour ``colors[k]`` (and shape ``shapes[k]``, default circles) at points[k, 0]; with
    :func:`tora_condition` it makes a clip start where the drawn paths start."""
    import numpy as np

    from ..data import Sprite, random_background, render_scene

    p = torch.as_tensor(points, dtype=torch.float64).cpu()
    if p.ndim != 3 or p.shape[-1] != 2 or len(colors) != len(p):
        raise ValueError(f"points must be (K, T, 2) with one colour per object; got {tuple(p.shape)} and "
                         f"{len(colors)} colours")
    shapes = shapes or ["circle"] * len(p)
    bg = random_background(np.random.default_rng(seed), size, size)
    sprites = [Sprite(s, c, radius, p[k, :1].numpy()) for k, (c, s) in enumerate(zip(colors, shapes))]
    return render_scene(bg, sprites)[:, 0]


@torch.no_grad()
def tora_condition(space, motion_space, trajectories, first_frame: torch.Tensor, frames: int = TORA_FRAMES,
                   blur: tuple[int, float] = TORA_BLUR) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`sample_tora` needs for one clip from a user's ``trajectories`` (anything
    :func:`~minivid.conditioning.trajectory.load_trajectories` reads: a JSON/text file, a string, point lists) and a
    first frame (3, H, W) in [-1, 1]: (first-frame latent (1, C, h, w), motion latent (1, C_m, T, h, w), the per-frame
    positions (K, T, 2) in the frame's pixels)."""
    from ..conditioning.trajectory import load_trajectories, motion_video

    if not isinstance(first_frame, torch.Tensor) or first_frame.ndim != 3 or first_frame.shape[0] != 3:
        got = tuple(first_frame.shape) if isinstance(first_frame, torch.Tensor) else type(first_frame).__name__
        raise ValueError(f"first_frame must be an image (3, H, W) in [-1, 1], got {got}")
    h, w = first_frame.shape[1:]
    points = load_trajectories(trajectories).per_frame(frames, h, w)
    motion = motion_space.encode(motion_video(points, h, w, blur)[None])
    first = space.encode(first_frame[None, :, None])[:, :, 0]
    return first, motion, points


@torch.no_grad()
def null_motion(motion_space, frames: int = TORA_FRAMES, size: int = TORA_SIZE) -> torch.Tensor:
    """The motion latent of no trajectory (an all-white g_vis) (1, C_m, T, h, w): classifier-free guidance's null."""
    return motion_space.encode(torch.ones(1, 3, frames, size, size))


def show_paths(videos: torch.Tensor, paths, titles=None, max_frames: int = 8):
    """A frame grid of clips (N, 3, T, H, W) in [-1, 1] with each requested path (N, K, T, 2) or (N, T, 2) drawn on
    every frame (a line) and the frame's requested position marked (a ring). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    videos = videos.detach().cpu()  # decoded on a GPU they arrive there
    paths = [torch.as_tensor(p).reshape(-1, videos.shape[2], 2).cpu() for p in paths]
    n, t = len(videos), min(videos.shape[2], max_frames)
    fig, axes = plt.subplots(n, t, figsize=(1.3 * t, 1.4 * n), squeeze=False)
    for i in range(n):
        for j in range(t):
            ax = axes[i, j]
            ax.imshow(((videos[i, :, j].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
            for p in paths[i]:
                ax.plot(p[:, 0], p[:, 1], "-", color="white", lw=0.7, alpha=0.8)
                ax.plot(p[j, 0], p[j, 1], "o", mfc="none", mec="white", ms=9, mew=1.0)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"frame {j}", fontsize=8)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=7)
    fig.tight_layout()
    return fig
