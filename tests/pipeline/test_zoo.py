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


def test_cards_keep_run_configs_exact_and_round_metrics():
    """A card's numbers are rounded to 4 decimals, its run config is not (a norm's eps of 1e-5 stays 1e-5): the
    shipped full-system cards' run configs rebuild exactly the model config saved beside them."""
    from minivid.pipeline.run import SystemRunConfig
    assert recipes._round({"metrics": {"x": 0.123456}, "run": {"eps": 1e-5}, "system_run": {"eps": 1e-5}}) == \
        {"metrics": {"x": 0.1235}, "run": {"eps": 1e-5}, "system_run": {"eps": 1e-5}}
    for name in ("system", "system-causal", "system-reducio"):
        card = zoo.card(name)
        assert SystemRunConfig.from_dict(card["run"]).model == zoo.load(name).config, name
    assert SystemRunConfig.from_dict(zoo.card("t5")["system_run"]).model.text == zoo.load("t5").config


def test_t5_metrics_measure_how_far_one_word_moves_a_caption():
    """t5_metrics on the zoo's t5 reproduces its card; a caption's embedding moves when any of its word groups is
    replaced, and the T5 learnt through the system hears the colour more than a randomly initialised one does (the
    colour is what the sprite check and the caption's colour score look at). An encoder that embeds every caption
    alike is refused (no unit to measure in)."""
    from minivid.conditioning.text import TextEncoder
    card = zoo.card("t5")
    text = zoo.load("t5")
    m = recipes.t5_metrics(text)
    assert m["captions"] == 64
    for k in ("colour", "shape", "motion"):
        assert m["moves"][k] == pytest.approx(card["metrics"]["moves"][k], abs=2e-3)
        assert m["moves"][k] > 0 and m["moves_random_init"][k] > 0
    assert m["moves"]["colour"] > 2 * m["moves_random_init"]["colour"]
    torch.manual_seed(0)
    assert recipes.t5_metrics(TextEncoder(text.config), n=8)["moves_random_init"] == \
        recipes.t5_metrics(text, n=8)["moves_random_init"]  # the baseline is the config's seeded init

    class Constant(torch.nn.Module):
        config = text.config

        def forward(self, captions):
            return torch.ones(len(captions), 4, 8), torch.ones(len(captions), 4, dtype=torch.bool)

    with pytest.raises(ValueError, match="Constant embeds every caption alike"):
        recipes.t5_metrics(Constant(), n=8)


def test_the_zoo_t2v_and_system_hold_the_zoo_t5_frozen():
    """The t5 entry is what t2v, system and system-causal were trained with, frozen: their text encoders equal it
    weight for weight; and ``text_from="t5"`` (the cpu preset) loads it."""
    from minivid.pipeline.run import load_text_encoder, preset_config
    from minivid.pipeline.system import System
    t5 = zoo.load("t5").state_dict()
    for name in ("t2v", "system", "system-causal"):
        theirs = zoo.load(name).text.state_dict()
        assert theirs.keys() == t5.keys() and all(torch.equal(theirs[k], v) for k, v in t5.items()), name
    cfg = preset_config("cpu")
    assert cfg.text_from == "t5" and not cfg.model.text.trainable
    model = System(cfg.model)
    load_text_encoder(model, "t5")
    assert all(torch.equal(model.text.state_dict()[k], v) for k, v in t5.items())


def test_t5_is_not_scored_as_a_video_model():
    with pytest.raises(ValueError, match="t5 is a text encoder and makes no videos"):
        recipes.zoo_eval_set("t5", 4)
