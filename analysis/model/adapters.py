"""LoRA adapters (peft) over a pretrained backbone: how a backbone is fine-tuned, and how it is unlearned.

Full fine-tuning moves, and stores, every weight of the checkpoint; with LoRA only a rank-r
update W + (alpha / r) B A on the attention and MLP projections is trained (GPT-2: `c_attn`,
the attention and MLP `c_proj`, `c_fc`; the Llama family: q/k/v/o and gate/up/down), the
embeddings, norms and biases stay the backbone's. A trained adapter is stored twice: as
itself (`adapter/`, peft's safetensors and its config, the record of what was trained) and
merged into the weights (the model folder), because `load_recommender`, circuit discovery
and the TransformerLens bridge read an ordinary Hugging Face folder; merged and unmerged
scores agree to rounding (tests/test_lora.py).

LoRA applies to pretrained backbones only: the from-scratch recommender is small and is
trained fully (asking for an adapter without a backbone is a SettingsError).

Ownership of the adapter's factors by circuit nodes (for CURE's rules and conflict maps)
is in analysis/circuits/adapter_ownership.py.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

from ..compute import initialised_on_cpu
from ..errors import SettingsError

ADAPTER = "adapter"  # the folder, beside the merged weights, that holds the adapter
ADAPTER_NAME = "default"  # peft's name of the one adapter a model carries
KINDS = ("lora",)
TARGETS = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),  # `c_proj` matches both the attention and the MLP output projection
    **{family: ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
       for family in ("llama", "mistral", "qwen2")},
}


@dataclass(frozen=True)
class AdapterConfig:
    """A LoRA adapter's settings. Dropout defaults to 0 so that a run is deterministic (as eval-mode full
    fine-tuning of the unlearning loop is)."""

    kind: str = "lora"
    rank: int = 8
    alpha: float = 16.0  # LoRA's scale is alpha / rank
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SettingsError(f"unknown adapter {self.kind!r}; use {', '.join(KINDS)} (or none: full fine-tuning)")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise SettingsError(f"the LoRA rank must be an integer of at least 1, got {self.rank!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < float("inf")):
            raise SettingsError(f"the LoRA alpha must be a positive number, got {self.alpha!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise SettingsError(f"the LoRA dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))

    def key(self) -> dict:
        return asdict(self)


def from_options(kind: str, rank: int | None = None, alpha: float | None = None) -> AdapterConfig | None:
    """`--adapter`, `--lora-rank`, `--lora-alpha` -> the adapter they ask for (None: full fine-tuning)."""
    if kind == "full":
        given = [name for name, v in (("--lora-rank", rank), ("--lora-alpha", alpha)) if v is not None]
        if given:
            raise SettingsError(f"{given[0]} applies only with --adapter lora")
        return None
    return AdapterConfig(kind, **{k: v for k, v in (("rank", rank), ("alpha", alpha)) if v is not None})


def adapter_of(meta: dict) -> AdapterConfig | None:
    """The adapter a saved model was trained with (None: full fine-tuning; older models record none)."""
    found = meta.get("adapter")
    return AdapterConfig(**found) if found else None


def require_backbone(adapter: AdapterConfig | None, backbone, what: str) -> None:
    if adapter is not None and not backbone:
        raise SettingsError(f"{what}: a {adapter.kind} adapter needs a pretrained --backbone; the from-scratch "
                            f"recommender is always trained fully")


def attach(model, cfg: AdapterConfig):
    """Inject a fresh LoRA adapter into `model` (in place) and return peft's wrapper.

    Only the adapter's factors are trainable afterwards. The factors A start random (peft's
    Kaiming init, from torch's seed) and B at zero, so the wrapped model scores exactly as
    `model` did. Train and score through `inner(wrapper)`: the same modules, with the plain
    Hugging Face interface (`base_model`, `get_output_embeddings`) the scoring code uses.
    """
    from peft import LoraConfig, get_peft_model

    family = model.config.model_type
    if family not in TARGETS:
        raise SettingsError(f"no LoRA targets for model type {family!r}; supported: {sorted(TARGETS)}")
    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                        target_modules=list(TARGETS[family]), fan_in_fan_out=family == "gpt2")  # GPT-2: Conv1D
    # A is drawn from the CPU generator wherever the model lives; peft then moves the factors to their base layer's device
    return initialised_on_cpu(lambda: get_peft_model(model, config, adapter_name=ADAPTER_NAME))


def inner(wrapper):
    """The Hugging Face model inside peft's wrapper, its projections replaced by LoRA layers."""
    return wrapper.base_model.model


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_and_merge(wrapper, folder: Path):
    """Store the adapter (safetensors + config) in `folder`, then return the merged Hugging Face model.

    The wrapper is used up: peft's merge replaces the LoRA layers by their merged weights in place.
    """
    wrapper.save_pretrained(str(folder), safe_serialization=True)
    (Path(folder) / "README.md").unlink(missing_ok=True)  # peft's model-card template: placeholders only
    return wrapper.merge_and_unload()


def merged_copy(wrapper):
    """The merged model, leaving the wrapper (and its LoRA layers) as they are."""
    return copy.deepcopy(wrapper).merge_and_unload()
