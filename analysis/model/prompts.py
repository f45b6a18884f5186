"""How a user's history becomes token ids: the TALLRec/E2URec prompt, in two renderings.

A prompt is: a prefix with the user's attributes, the last H rated items each followed
by its star rating, then the target item. The answer is read at the target item's last
token: score = logit(Yes) - logit(No) there.

Because the answer sits at the end of the item part, a user's whole time line
`prefix, item_1, stars_1, item_2, stars_2, ...` holds the answer position of every
sample at once; training supervises many of them per sequence (see train.py), and a
single prompt is the same rendering cut after one target item.

- WordPrompt: the from-scratch default: one token per item, rating and attribute.
- TitlePrompt: a pretrained backbone's own tokenizer, items by title.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import pandas as pd
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..data.schema import AGE_GROUPS, RatingsData

PAD, UNK = "[PAD]", "[UNK]"
YES, NO = "Yes", "No"
PROMPT_WORDS = ("user", "rated:")


def item_token(item_id: int) -> str:
    return f"item_{int(item_id)}"


def rating_token(rating: float) -> str:
    return f"★{float(rating):g}"


NO_ATTRIBUTES = "attributes:none"  # a dataset without user attributes (latest-small) says so in one token


def attribute_tokens(age_group: str, gender: str, occupation: str) -> list[str]:
    """The user's attribute tokens; one `attributes:none` when none is known, instead of inventing three."""
    clean = lambda s: str(s).strip().replace(" ", "_") or "unknown"  # noqa: E731 - tokens are whitespace-split
    values = [clean(age_group), clean(gender), clean(occupation)]
    if all(v == "unknown" for v in values):
        return [NO_ATTRIBUTES]
    return [f"age:{values[0]}", f"gender:{values[1]}", f"occupation:{values[2]}"]


class PromptFormat(Protocol):
    kind: str
    yes_id: int
    no_id: int

    def prefix_ids(self, user: pd.Series) -> list[int]: ...
    def item_ids(self, item_id: int) -> list[int]: ...
    def rating_ids(self, rating: float) -> list[int]: ...


def build_word_tokenizer(data: RatingsData) -> PreTrainedTokenizerFast:
    """Word-level vocabulary: specials, prompt words, Yes/No, attributes, ratings, items."""
    words: list[str] = [PAD, UNK, *PROMPT_WORDS, YES, NO]
    users = data.users
    attrs = set()
    for _, u in users.iterrows():
        attrs.update(attribute_tokens(u["age_group"], u["gender"], u["occupation"]))
    attrs.update(("age:unknown", "gender:unknown", "occupation:unknown"))  # a partly known user
    attrs.update(f"age:{name}" for _, name in AGE_GROUPS)
    words += sorted(attrs)
    words += [rating_token(r) for r in sorted(data.ratings["rating"].unique())]
    words += [item_token(i) for i in sorted(data.items["item_id"])]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token=UNK, pad_token=PAD)


@dataclass
class WordPrompt:
    tokenizer: PreTrainedTokenizerBase
    kind: str = "word"

    def __post_init__(self) -> None:
        vocab = self.tokenizer.get_vocab()
        self._vocab = vocab
        self.yes_id, self.no_id = vocab[YES], vocab[NO]
        self._unk = vocab[UNK]

    def _id(self, word: str) -> int:
        return self._vocab.get(word, self._unk)

    def prefix_ids(self, user: pd.Series) -> list[int]:
        words = ["user", *attribute_tokens(user["age_group"], user["gender"], user["occupation"]), "rated:"]
        return [self._id(w) for w in words]

    def item_ids(self, item_id: int) -> list[int]:
        return [self._id(item_token(item_id))]

    def rating_ids(self, rating: float) -> list[int]:
        return [self._id(rating_token(rating))]


@dataclass
class TitlePrompt:
    """Items by title for a pretrained backbone, e.g. "...\\nToy Story (1995): 4 stars."."""

    tokenizer: PreTrainedTokenizerBase
    titles: dict[int, str]
    kind: str = "title"

    def __post_init__(self) -> None:
        enc = lambda s: self.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        # The last piece of " Yes" is the word itself for both BPE (GPT-2) and SentencePiece (Llama).
        self.yes_id, self.no_id = enc(" Yes")[-1], enc(" No")[-1]
        self._encode = lru_cache(maxsize=None)(enc)

    def prefix_ids(self, user: pd.Series) -> list[int]:
        known = attribute_tokens(user["age_group"], user["gender"], user["occupation"]) != [NO_ATTRIBUTES]
        who = (f"A user (age {user['age_group']}, gender {user['gender']}, occupation {user['occupation']})"
               if known else "A user (no attributes given)")
        text = f"{who} rated movies from 1 to 5 stars. Will they like the last movie? Yes or No."
        return list(self.tokenizer.encode(text, add_special_tokens=True))

    def item_ids(self, item_id: int) -> list[int]:
        return list(self._encode(f"\n{self.titles.get(int(item_id), item_token(item_id))}:"))

    def rating_ids(self, rating: float) -> list[int]:
        return list(self._encode(f" {float(rating):g} stars."))


def make_format(kind: str, tokenizer: PreTrainedTokenizerBase, data: RatingsData) -> PromptFormat:
    if kind == "word":
        return WordPrompt(tokenizer)
    if kind == "title":
        return TitlePrompt(tokenizer, dict(zip(data.items["item_id"], data.items["title"])))
    raise ValueError(f"unknown prompt format {kind!r}")
