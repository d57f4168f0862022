"""The zoo's recipes (python -m minivid train NAME): a shortened run writes a complete entry (weights, card with the
command and metrics, train.log) through a temporary folder, a failing run leaves nothing behind, --rescore
recomputes the metrics from the saved weights, and bad arguments are refused before any work."""

import json

import pytest
import torch

import minivid.pretrained as zoo
from minivid.__main__ import main
from minivid.pipeline import zoo as recipes


def test_a_short_recipe_writes_a_complete_entry_and_rescore_reproduces_it(tmp_path):
    card = recipes.train_zoo_model("vae2d", tmp_path / "vae2d", steps=2, progress=False, log=lambda m: None)
    assert zoo.available(tmp_path) == ["vae2d"] and not (tmp_path / "vae2d.partial").exists()
    assert card["command"] == "python -m minivid train vae2d --steps 2" and card["steps"] == 2
    assert (tmp_path / "vae2d" / "train.log").read_text().startswith("$ python -m minivid train vae2d --steps 2")
    m = card["metrics"]
    assert m["test_clips"] == 64 and m["margin_db"] == pytest.approx(m["psnr"] - m["best_baseline_psnr"], abs=2e-4)
    assert "1x4x4 block means (the latent grid)" in m["baselines_psnr"]
    again = recipes.rescore_zoo_model("vae2d", tmp_path)
    assert again["metrics"]["psnr"] == pytest.approx(m["psnr"], abs=1e-3)  # same clips, same weights
    assert json.loads((tmp_path / "vae2d" / "card.json").read_text())["metrics_recomputed"]["commit"] == \
        again["metrics_recomputed"]["commit"]


def test_a_failing_recipe_leaves_no_entry(tmp_path, monkeypatch):
    def broken(steps, progress, log):
        raise RuntimeError("simulated crash in training")

    monkeypatch.setitem(recipes.RECIPES, "vae2d", recipes.Recipe("vae2d", "x", 1, broken, recipes._score_ae))
    with pytest.raises(RuntimeError, match="simulated crash"):
        recipes.train_zoo_model("vae2d", tmp_path / "vae2d", progress=False)
    assert not (tmp_path / "vae2d").exists()


def test_cli_refuses_bad_arguments_before_work(capsys):
    for args, message in [(["train", "nope"], "train 'nope': not a preset (cpu, cpu-causal, cpu-reducio, gpu, gpu-multi) or a zoo recipe (causal-vae, i2v, latent-unet, latte, motion-vae, pvdm-ae"),
                          (["train", "vae2d", "--steps", "0"], "--steps 0: must be a positive integer"),
                          (["train", "vae2d", "--threads", "0"], "--threads 0: must be a positive integer")]:
        with pytest.raises(SystemExit):
            main(args)
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"name='nope' is not a zoo recipe"):
        recipes.train_zoo_model("nope")


def test_sprite_scores_and_jitter_on_real_clips_and_noise():
    real = recipes.clip_pool(32, 32, 8, split="test")
    s = recipes.sprite_scores(real)
    assert s["sprite_check"] >= 0.8 and s["clips"] == 32 and 0 < s["centre_jitter_px"] < 1.0
    noise = torch.rand(8, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert recipes.sprite_scores(noise)["sprite_check"] == 0.0


def test_train_help_names_every_recipe(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in recipes.RECIPES:
        assert name in text.split("recipe name:")[1].split("options")[0], name


def test_train_autoencoder_images_first_then_clips(monkeypatch):
    """``image_steps``: the first updates see ``image_batch`` single frames (1-frame clips) drawn from the pool's
    clips, the rest whole clips; out-of-range counts are refused before any work."""
    from minivid.autoencoders import CausalVAE, CausalVAEConfig

    seen = []
    monkeypatch.setattr(recipes.AutoencoderTrainer, "step", lambda self, x: seen.append(tuple(x.shape)) or {"l1": 0.0,
                                                                                                          "lr": 0.0})
    pool = torch.rand(6, 3, 5, 16, 16) * 2 - 1
    model = CausalVAE(CausalVAEConfig(channels=4, latent_channels=2, spatial_factor=4, num_res_blocks=1, norm_groups=2))
    recipes.train_autoencoder(model, pool, 5, batch=2, lr=1e-3, warmup=1, progress=False, log=lambda m: None,
                              image_steps=3, image_batch=7)
    assert seen == [(7, 3, 1, 16, 16)] * 3 + [(2, 3, 5, 16, 16)] * 2
    with pytest.raises(ValueError, match="image_steps=6"):
        recipes.train_autoencoder(model, pool, 5, batch=2, lr=1e-3, warmup=1, progress=False, image_steps=6)
