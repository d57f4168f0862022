"""Every zoo recipe at HEAD still trains and scores: ``python -m minivid train NAME --steps 2`` for each of the 15
recipes writes an entry whose model is the shipped entry's (same class, same parameter count) and whose card holds
the fields the shipped card holds (what the zoo's README, the notebooks and tests/test_pretrained.py read), so that
retraining an entry cannot fail an hour in, or produce a card nothing can read.

The four cheapest autoencoder recipes (under 35 s each on one core; vae2d is in test_zoo.py) run in ``make test``.
The denoisers' recipes sample 64 held-out clips to score themselves (40 s to 7 min each on one core, about 25 min in
all): they are marked ``recipes`` and run with ``make recipes`` (``pytest --recipes``)."""

import pytest

import minivid.pretrained as zoo
from minivid.pipeline.zoo import RECIPES, train_zoo_model, zoo_readme

IN_MAKE_TEST = ["causal-vae", "reducio-vae", "pvdm-ae", "motion-vae"]
SLOW = [n for n in RECIPES if n not in IN_MAKE_TEST and n != "vae2d"]

# Fields a card may hold or not regardless of the code that wrote it: a rescore's record, a hand-written note, where
# an entry's weights were taken from (t5's card, split out of a system run, keeps that run's float32 metrics as
# system_metrics_float32), the float32 metrics of a float16 entry (checked apart below).
OPTIONAL = {"metrics_recomputed", "note", "weights_from", "metrics_float32", "system_metrics_float32"}
# Fields a recipe writes today that its shipped card, made before they existed, lacks: t5's card was split out of a
# system run of 2026-12-05 (its weights_from), before the system's cards said which prediction and schedule it used.
NEWER_THAN_SHIPPED = {"t5": {"prediction", "schedule"}}


def card_fields(card: dict, prefix: str = "") -> set[str]:
    """The dotted key paths of a card, without ``failures`` (its keys are the failures the samples happen to show)
    and without the run config (checked by the config's own tests) or OPTIONAL top-level fields."""
    out = set()
    for k, v in card.items():
        if (not prefix and k in OPTIONAL) or k == "failures":
            continue
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("run", "system_run"):
            out |= card_fields(v, prefix + k + ".")
    return out


def test_every_recipe_is_checked_somewhere():
    assert sorted(IN_MAKE_TEST + SLOW + ["vae2d"]) == sorted(RECIPES)


@pytest.mark.parametrize("name", [*IN_MAKE_TEST, *(pytest.param(n, marks=pytest.mark.recipes) for n in SLOW)])
def test_a_two_step_run_of_the_recipe_writes_the_shipped_entrys_model_and_card_fields(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the full-system recipes keep their run in outputs/runs/zoo-NAME-STEPS
    root = tmp_path / "zoo"
    card = train_zoo_model(name, root / name, steps=2, progress=False, log=lambda m: None)
    shipped = zoo.card(name)
    model = zoo.load(name, root=root)
    assert type(model).__name__ == card["model_class"] == shipped["model_class"]
    assert model.num_parameters() == card["parameters"]
    if name != "tora" or card["metrics"]["fuser"] == shipped["metrics"]["fuser"]:
        assert card["parameters"] == shipped["parameters"]
    else:  # tora keeps the best of its fusers (T7), whose sizes differ: after 2 steps another may win
        assert set(card["metrics"]["table"]) == set(shipped["metrics"]["table"])
    assert card["command"] == f"python -m minivid train {name} --steps 2" and card["requires"] == shipped["requires"]
    new, old = card_fields(card) - NEWER_THAN_SHIPPED.get(name, set()), card_fields(shipped)
    assert new == old, f"only in the new card: {sorted(new - old)}; only in the shipped one: {sorted(old - new)}"
    half = RECIPES[name].storage == "float16"
    assert ("metrics_float32" in card) == half and card.get("storage_dtype", "float32") == RECIPES[name].storage
    if half:
        assert card_fields(card["metrics_float32"]) == card_fields(card["metrics"])
    # the zoo README renders the entry's held-out result from its card (not the "see card.json" fallback)
    row = next(line for line in zoo_readme(root).splitlines() if line.startswith(f"| `{name}` |"))
    assert "see card.json" not in row
