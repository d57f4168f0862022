"""Diffusion math (D1-D10), the ground floor of every model in minivid: schedules, the forward process and its
posterior, the eps / x0 / v parameterisations, losses, timestep samplers, samplers, classifier-free guidance, the
Gaussian oracle, and the training core (:class:`Trainer`, :class:`DiffusionTrainer`). It imports nothing from
minivid but ``utils`` and ``nn``; models live in ``unets``, ``transformers`` and ``autoencoders``. See
docs/equations.md for where each equation lives and is tested."""

from .gaussian import GaussianOracle
from .guidance import classifier_free_guidance, drop_condition, nested_guidance
from .losses import (
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    l_simple,
    masked_mean_flat,
    mean_flat,
    normal_kl,
    training_losses,
    vlb_terms,
    x0_weighted_loss,
)
from .samplers import ddim_sample, ddpm_sample, dpm_solver_pp_sample, randn_like
from .schedule import PREDICTIONS, VARIANCES, NoiseSchedule, check_prediction, split_learned_variance
from .timesteps import SPACINGS, explicit_uniform_timesteps, make_timesteps, uniform_timesteps
from .training import DiffusionTrainer, Trainer, checkpoints, latest_checkpoint

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
    "nested_guidance",
    "drop_condition",
    "randn_like",
    "l_simple",
    "x0_weighted_loss",
    "hybrid_loss",
    "vlb_terms",
    "training_losses",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "masked_mean_flat",
    "mean_flat",
    "GaussianOracle",
    "Trainer",
    "DiffusionTrainer",
    "checkpoints",
    "latest_checkpoint",
]
