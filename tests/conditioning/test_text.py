"""The T5 text encoder: offline default (random T5 + ByT5 bytes), padding masks, truncation with a warning, the null
caption, freezing, and the loading path on a checkpoint the test saves with save_pretrained."""

import warnings

import pytest
import torch

from minivid.conditioning import TextEncoder, TextEncoderConfig
from minivid.nn import load_model, save_model


def test_default_is_a_small_random_t5_with_byte_tokens():
    enc = TextEncoder()
    assert enc.width == 64 and enc.num_parameters() < 200_000
    tokens, mask = enc(["a red circle moves right", "a cat"])
    # ByT5: one token per byte plus </s>; the batch is padded to its longest caption
    assert tokens.shape == (2, len("a red circle moves right") + 1, 64)
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [25, 6]
    ids, _ = enc.tokenize(["ab"])
    assert ids[0].tolist() == [ord("a") + 3, ord("b") + 3, 1]  # bytes shifted by the 3 special tokens, then </s>


def test_padding_does_not_change_real_tokens():
    """T5's encoder masks padded keys: a caption's tokens are the same alone and in a padded batch."""
    enc = TextEncoder().eval()
    alone, _ = enc(["a blue square"])
    batch, mask = enc(["a blue square", "a green triangle bounces off the walls"])
    n = mask[0].sum()
    assert not mask[0, n:].any()
    assert torch.allclose(batch[0, :n], alone[0], atol=1e-5)


def test_truncation_warns_and_cuts():
    enc = TextEncoder(max_length=8)
    with pytest.warns(UserWarning, match="1 of 2 caption"):
        tokens, mask = enc(["short", "a very long caption indeed"])
    assert tokens.shape[1] == 8 and mask[1].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc(["short"])  # nothing cut: no warning
    enc = TextEncoder(max_length=8, pad_to_max_length=True)
    assert enc(["ab"])[0].shape[1] == 8


def test_null_condition_and_bad_input():
    enc = TextEncoder()
    tokens, mask = enc.null(3)
    assert tokens.shape[0] == 3 and mask.sum(1).tolist() == [1, 1, 1]  # the empty caption is just </s>
    with pytest.raises(ValueError, match="captions must be a non-empty list of strings"):
        enc("a red circle")
    with pytest.raises(ValueError, match="max_length"):
        TextEncoderConfig(max_length=0)


def test_frozen_encoder_has_no_gradients():
    enc = TextEncoder(trainable=False)
    enc.train()
    assert not enc.t5.training
    tokens, _ = enc(["a red circle"])
    assert not tokens.requires_grad
    enc = TextEncoder()
    tokens, _ = enc(["a red circle"])
    assert tokens.requires_grad


def test_loads_a_saved_checkpoint_and_round_trips(tmp_path):
    enc = TextEncoder(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2).eval()
    enc.t5.save_pretrained(tmp_path / "t5")
    enc.tokenizer.save_pretrained(tmp_path / "t5")
    loaded = TextEncoder(name_or_path=str(tmp_path / "t5")).eval()
    caps = ["a red circle moves right", "two sprites"]
    a, ma = enc(caps)
    b, mb = loaded(caps)
    assert torch.equal(ma, mb) and torch.allclose(a, b, atol=1e-6)
    # minivid's own format: the random default's weights survive save_model / load_model
    save_model(enc, tmp_path / "minivid")
    c, _ = load_model(tmp_path / "minivid").eval()(caps)
    assert torch.allclose(a, c, atol=1e-6)
    with pytest.raises(ValueError, match="no T5 checkpoint"):
        TextEncoder(name_or_path=str(tmp_path / "missing"))
