"""The recommender: a Hugging Face causal LM plus its prompt format, and its score.

score = logit(Yes) - logit(No) at the answer position. We compute it from the final
hidden state and the two unembedding rows only, which equals the full-vocabulary logit
difference but skips the (large, for pretrained backbones) vocabulary projection.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..cache import verify
from ..compute import current, place, to_numpy
from ..data.schema import RatingsData
from ..errors import CacheError
from ..progress import ProgressFn, or_silent
from .prompts import PromptFormat, make_format
from .sequences import pad_batch

META = "recommender.json"


def answer_scores(model: PreTrainedModel, hidden: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """logit(Yes) - logit(No) for hidden states of shape (..., d_model)."""
    head = model.get_output_embeddings()
    direction = head.weight[yes_id] - head.weight[no_id]
    score = hidden @ direction
    if getattr(head, "bias", None) is not None:
        score = score + (head.bias[yes_id] - head.bias[no_id])
    return score


def length_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()  # on the active device


def final_hidden(model: PreTrainedModel, input_ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Last-layer hidden states of right-padded sequences of the given lengths."""
    mask = length_mask(lengths, input_ids.shape[1])
    return model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state


@dataclass
class Recommender:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fmt: PromptFormat
    meta: dict
    path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.fmt.no_id)

    @torch.no_grad()
    def score_prompts(
        self, prompts: list[list[int]], batch_size: int | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """Score of each prompt at its last token (prompts may differ in length)."""
        progress = or_silent(progress)
        batch_size = batch_size or current().batch(512)
        self.model.eval()
        order = np.argsort([len(p) for p in prompts], kind="stable")  # similar lengths share a batch
        out = np.empty(len(prompts), dtype=np.float64)
        for start in range(0, len(prompts), batch_size):
            idx = order[start : start + batch_size]
            batch = [prompts[i] for i in idx]
            ids = torch.as_tensor(pad_batch(batch, self.pad_id))
            lengths = [len(p) for p in batch]
            hidden = final_hidden(self.model, ids, lengths)[torch.arange(len(batch)), torch.tensor(lengths) - 1]
            out[idx] = to_numpy(answer_scores(self.model, hidden, self.fmt.yes_id, self.fmt.no_id))
            progress("score", min(start + batch_size, len(prompts)), len(prompts))
        return out

    @torch.no_grad()
    def score_candidates(self, context: list[int], candidates: list[list[int]],
                         batch_size: int | None = None) -> np.ndarray:
        """Scores of many target items after one shared context, reusing its key/value cache.

        Exact: with causal attention the context's keys and values do not depend on what
        follows, so running the context once and each candidate on top of it equals
        running every full prompt.
        """
        self.model.eval()
        batch_size = batch_size or current().batch(512)
        ctx = torch.tensor([context])
        past = self.model.base_model(input_ids=ctx, use_cache=True).cache
        out = np.empty(len(candidates), dtype=np.float64)
        for start in range(0, len(candidates), batch_size):
            batch = candidates[start : start + batch_size]
            ids = torch.as_tensor(pad_batch(batch, self.pad_id))
            lengths = [len(c) for c in batch]
            mask = torch.cat([torch.ones(len(batch), len(context), dtype=torch.long),
                              length_mask(lengths, ids.shape[1])], dim=1)
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask, cache=_expand_cache(past, len(batch)),
                                           use_cache=True).last_hidden_state
            h = hidden[torch.arange(len(batch)), torch.tensor(lengths) - 1]
            out[start : start + len(batch)] = to_numpy(answer_scores(self.model, h, self.fmt.yes_id, self.fmt.no_id))
        return out

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        with open(directory / META, "w") as f:
            json.dump(self.meta, f, indent=2, sort_keys=True, default=str)


def _expand_cache(past, n: int):
    cache = copy.deepcopy(past)
    cache.batch_repeat_interleave(n)
    return cache


def load_recommender(directory: str | Path, data: RatingsData, check: bool = True) -> Recommender:
    """Load a saved recommender; with `check`, its manifest checksums are verified first."""
    directory = Path(directory)
    if not (directory / META).is_file():
        raise CacheError(f"{directory}: not a recommender folder (no {META})")
    if check and (directory / "manifest.json").is_file():
        verify(directory)
    try:
        meta = json.loads((directory / META).read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = place(AutoModelForCausalLM.from_pretrained(directory)).eval()
    except Exception as exc:  # transformers raises many types for broken folders
        raise CacheError(f"{directory}: cannot load the model ({exc})") from exc
    fmt = make_format(meta["prompt_format"], tokenizer, data)
    return Recommender(model, tokenizer, fmt, meta, directory)
