"""The text encoder of the text-to-video models: a T5 encoder from ``transformers`` (CogVideoX, Reducio, Tora use
T5; R4's e_p = MLP(T5(prompt)) and C4's text tokens start here).

**Offline by default.** With ``name_or_path=None`` (the default) the encoder is a small randomly initialised
``T5EncoderModel`` (2 layers, width 64) with the byte-level ``ByT5Tokenizer``, which needs no vocabulary file: it
is trained together with the video model, and everything runs without a download. Given a local folder (written
by ``save_pretrained``) or the name of a checkpoint already in the Hugging Face cache (``google/t5-v1_1-xxl``,
``google/flan-t5-base``, ...), it loads that checkpoint and its tokenizer instead; minivid never downloads (it
passes ``local_files_only=True``), so a name that is not cached is a clear error.

**Calls.** ``encoder(captions)`` -> ``(tokens, key_padding_mask)``: tokens (B, L, width) and a bool mask (B, L),
True on real tokens, False on padding (the convention of :func:`minivid.nn.attention`). A batch is padded to its
longest caption, or to ``max_length`` with ``pad_to_max_length`` (the released CogVideoX pipelines pad T5 to 226
tokens and attend to the padding). **A caption longer than ``max_length`` tokens is truncated** (its end is cut;
ByT5 counts bytes, so 64 tokens are about 60 characters) and a warning says how many captions were cut.
``encoder.null(batch)`` is the empty caption's encoding, the unconditional branch of classifier-free guidance.

``trainable=False`` freezes the weights (no gradients, eval mode, encoded under ``torch.no_grad``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from ..nn import Model, ModelConfig
from ..utils.validation import check_positive_ints


@dataclass
class TextEncoderConfig(ModelConfig):
    """``name_or_path`` None: a random T5 of the given shape with ByT5's tokenizer; else a local T5 checkpoint."""

    name_or_path: str | None = None
    max_length: int = 64
    pad_to_max_length: bool = False
    trainable: bool = True
    d_model: int = 64
    d_kv: int = 16
    d_ff: int = 128
    num_layers: int = 2
    num_heads: int = 4

    def __post_init__(self):
        check_positive_ints(self, ("max_length", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"))
        if self.name_or_path is not None and not isinstance(self.name_or_path, str):
            raise ValueError(f"name_or_path={self.name_or_path!r} must be a string (a folder or a cached "
                             "checkpoint name) or None (a small random T5)")


def _load_pretrained(name_or_path: str):
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        model = T5EncoderModel.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"name_or_path={name_or_path!r}: no T5 checkpoint with its tokenizer found locally (a "
                         "folder written by save_pretrained, or a name already in the Hugging Face cache; minivid "
                         f"does not download): {e}") from e
    return tokenizer, model


class TextEncoder(Model):
    """T5 text encoder: ``encoder(captions) -> (tokens (B, L, width), mask (B, L))``; see the module docstring."""

    config_class = TextEncoderConfig

    def __init__(self, config: TextEncoderConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        if c.name_or_path is None:
            from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

            self.tokenizer = ByT5Tokenizer()
            cfg = T5Config(vocab_size=len(self.tokenizer), d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
                           num_layers=c.num_layers, num_heads=c.num_heads, dropout_rate=0.0,
                           feed_forward_proj="gated-gelu", pad_token_id=self.tokenizer.pad_token_id,
                           eos_token_id=self.tokenizer.eos_token_id, decoder_start_token_id=0)
            self.t5 = T5EncoderModel(cfg)
        else:
            self.tokenizer, self.t5 = _load_pretrained(c.name_or_path)
        if not c.trainable:
            self.t5.requires_grad_(False)
            self.t5.eval()

    @property
    def width(self) -> int:
        """The width of the tokens (the T5's d_model)."""
        return self.t5.config.d_model

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.config.trainable:
            self.t5.eval()  # a frozen encoder stays in eval mode
        return self

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids (B, L), mask (B, L) bool) on the encoder's device; warns when captions are truncated."""
        if isinstance(captions, str) or not all(isinstance(s, str) for s in captions) or len(captions) == 0:
            raise ValueError(f"captions must be a non-empty list of strings, got {type(captions).__name__}"
                             + (f" {captions!r}" if isinstance(captions, str) else ""))
        c = self.config
        lengths = [len(ids) for ids in self.tokenizer(list(captions))["input_ids"]]
        cut = sum(n > c.max_length for n in lengths)
        if cut:
            warnings.warn(f"{cut} of {len(captions)} caption(s) are longer than max_length={c.max_length} tokens "
                          f"(longest {max(lengths)}) and were truncated", stacklevel=3)
        batch = self.tokenizer(list(captions), padding="max_length" if c.pad_to_max_length else "longest",
                               max_length=c.max_length, truncation=True, return_tensors="pt")
        device = next(self.t5.parameters()).device
        return batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The T5 tokens (B, L, width) of token ids (B, L) from :meth:`tokenize` and their mask (B, L)."""
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"ids {tuple(ids.shape)} and mask {tuple(mask.shape)} must both be (B, L)")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.trainable):
            return self.t5(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(captions)
        return self.encode_ids(ids, mask), mask

    def null(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty caption's (tokens, mask) for ``batch`` samples: the unconditional branch of CFG."""
        return self([""] * int(batch))


SHAPE_FIELDS = ("name_or_path", "max_length", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")


def copy_text_encoder(target: TextEncoder, source: TextEncoder, what: str = "source") -> None:
    """Copy ``source``'s weights into ``target`` (a trained T5 to start from, as CogVideoX starts from a pretrained
    one); a ValueError naming each field of :data:`SHAPE_FIELDS` that differs (source -> target), ``what`` naming the
    source in the message."""
    mine, theirs = target.config, source.config
    diff = [f"{k}: {getattr(theirs, k)} -> {getattr(mine, k)}" for k in SHAPE_FIELDS
            if getattr(mine, k) != getattr(theirs, k)]
    if diff:
        raise ValueError(f"{what}: its text encoder differs from model.text ({'; '.join(diff)})")
    target.load_state_dict(source.state_dict())


__all__ = ["TextEncoderConfig", "TextEncoder", "copy_text_encoder"]
