"""Diffusion math (D1-D10): schedules, forward process and posterior, parameterisations, losses,
timestep samplers and samplers; and PVDM's diffusion side (P7-P9): the plane U-Net (``PlaneUNet``), joint
conditional/unconditional training (``joint_loss``, ``JointTrainer``) and clip-by-clip sampling
(``sample_planes``, ``generate_long_video``). The demo's ``VideoUNet`` lives in ``video_unet`` (not
re-exported). See docs/equations.md for where each equation lives and is tested."""

from .gaussian import GaussianOracle
from .losses import (
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    l_simple,
    mean_flat,
    normal_kl,
    training_losses,
    vlb_terms,
    x0_weighted_loss,
)
from .plane_unet import PlaneUNet, PlaneUNetConfig
from .pvdm_sampling import JointTrainer, generate_long_video, joint_loss, sample_planes
from .samplers import classifier_free_guidance, ddim_sample, ddpm_sample, dpm_solver_pp_sample, randn_like
from .schedule import PREDICTIONS, VARIANCES, NoiseSchedule, check_prediction, split_learned_variance
from .timesteps import SPACINGS, explicit_uniform_timesteps, make_timesteps, uniform_timesteps

__all__ = [
    "NoiseSchedule",
    "PREDICTIONS",
    "VARIANCES",
    "SPACINGS",
    "split_learned_variance",
    "check_prediction",
    "make_timesteps",
    "uniform_timesteps",
    "explicit_uniform_timesteps",
    "ddpm_sample",
    "ddim_sample",
    "dpm_solver_pp_sample",
    "classifier_free_guidance",
    "randn_like",
    "l_simple",
    "x0_weighted_loss",
    "hybrid_loss",
    "vlb_terms",
    "training_losses",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "GaussianOracle",
    "PlaneUNet",
    "PlaneUNetConfig",
    "JointTrainer",
    "joint_loss",
    "sample_planes",
    "generate_long_video",
]
