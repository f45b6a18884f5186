"""Training the recommender, from scratch or from a pretrained backbone, with one loop.

Each step takes a batch of user sequences and supervises every answer position in
them at once (binary cross-entropy on logit(Yes) - logit(No)). The model with the best
validation AUC is kept. `train_recommender` with a deletion request is the exact
unlearning gold standard: the forgotten interactions never enter training at all.

A pretrained backbone is fine-tuned fully by default, or through a LoRA adapter
(`adapter=AdapterConfig(...)`, see adapters.py): then only the adapter trains, and the model
folder holds the merged weights plus the adapter itself (`adapter/`). The backbone folder is
only read. The adapter enters the cache key only when one is used, so the keys of every
model trained before adapters existed stay as they were.
"""
from __future__ import annotations

import hashlib
import math
import resource
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from ..cache import build_or_load, config_key
from ..compute import current, initialised_on_cpu, place
from ..config import ModelConfig, TrainConfig
from ..data.forget import ForgetSet, retained_training
from ..errors import DataError, SettingsError, TrainingError
from ..progress import ProgressFn, or_silent, within
from ..workspace import Workspace
from .adapters import ADAPTER, AdapterConfig, attach, inner, require_backbone, save_and_merge, trainable_count
from .evaluate import evaluate_model, evaluate_split
from .prompts import build_word_tokenizer, make_format
from .recommender import Recommender, answer_scores, final_hidden, load_recommender
from .sequences import PromptBuilder, Sequence, pad_batch, tail_attention

MODELS = "models"


def backbone_fingerprint(path: Path) -> dict:
    """Identify a local HF folder by its small files' content and its large files' sizes."""
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: not a Hugging Face model folder (no config.json)")
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes() if p.stat().st_size < 1 << 20 else str(p.stat().st_size).encode())
    return {"path": str(path.resolve()), "digest": h.hexdigest()[:16]}


def model_key(ws: Workspace, forget: ForgetSet | None, model_cfg: ModelConfig, train_cfg: TrainConfig,
              backbone: Path | None, adapter: AdapterConfig | None = None) -> str:
    core = ws.key_core()
    # models were keyed "version" before the shared core existed: renaming it would retrain every stored model
    # (test_lora pins a model key)
    core["version"] = core.pop("code")
    key = {
        **core, "kind": "recommender",
        "split": ws.config.split_fraction, "never_seen": ws.config.never_seen, "forget": forget.key if forget else None,
        "model": backbone_fingerprint(backbone) if backbone else asdict(model_cfg), "train": asdict(train_cfg),
    }
    if adapter is not None:  # only then: full fine-tuning keeps the keys it had before adapters existed
        key["adapter"] = adapter.key()
    return config_key(key)


def _new_model(ws: Workspace, model_cfg: ModelConfig, train_cfg: TrainConfig, backbone: Path | None):
    """The model to train, built on the CPU (not placed yet: see `initialised_on_cpu`)."""
    if backbone is not None:
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        model = AutoModelForCausalLM.from_pretrained(backbone)
        return model, tokenizer, "title"
    tokenizer = build_word_tokenizer(ws.data)
    H, K = ws.config.history, train_cfg.targets_per_sequence
    n_positions = max(64, 1 << math.ceil(math.log2(8 + 2 * (H + K))))
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=model_cfg.d_model, n_layer=model_cfg.n_layer,
        n_head=model_cfg.n_head, n_inner=model_cfg.d_mlp, resid_pdrop=model_cfg.dropout,
        embd_pdrop=model_cfg.dropout, attn_pdrop=model_cfg.dropout, bos_token_id=None, eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config), tokenizer, "word"



def sequence_loss(model, batch: list[Sequence], pad_id: int, yes_id: int, no_id: int) -> tuple[torch.Tensor, int]:
    """Mean BCE over every answer position of a batch of sequences; also returns tokens seen."""
    ids = torch.as_tensor(pad_batch([s.ids for s in batch], pad_id))
    rows = torch.tensor([i for i, s in enumerate(batch) for _ in s.answer_positions])
    cols = torch.tensor([p for s in batch for p in s.answer_positions])
    labels = torch.tensor([y for s in batch for y in s.labels], dtype=torch.float32)
    if any(s.tail for s in batch):
        mask, positions = tail_attention(batch, ids.shape[1], model.dtype)
        hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    else:
        hidden = final_hidden(model, ids, [len(s.ids) for s in batch])
    hidden = hidden[rows, cols]
    scores = answer_scores(model, hidden, yes_id, no_id)
    # the loss in float32 whatever the model's dtype (a no-op in float32)
    return F.binary_cross_entropy_with_logits(scores.float(), labels), int(ids.numel())


def _lr_lambda(total: int, warmup: float):
    warm = max(1, int(total * warmup))
    return lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))


def _fit(rec: Recommender, ws: Workspace, forget: ForgetSet | None, cfg: TrainConfig,
         progress: ProgressFn) -> dict:
    builder = PromptBuilder(rec.fmt, ws.interactions)
    retained = retained_training(ws.interactions, forget)
    rng = np.random.default_rng(cfg.seed)
    offsets = rng.integers(cfg.targets_per_sequence, size=cfg.epochs)
    epochs = [builder.training_sequences(retained, cfg.targets_per_sequence, int(o), cfg.unrated_negatives, rng)
              for o in offsets]
    if not any(epochs):
        raise TrainingError(f"no training sample has {ws.config.history} retained ratings before it")
    total_steps = sum(math.ceil(len(seqs) / cfg.batch_size) for seqs in epochs)
    trainable = {n: p for n, p in rec.model.named_parameters() if p.requires_grad}  # all, or an adapter's
    partial = len(trainable) < len(list(rec.model.parameters()))
    decay = [p for p in trainable.values() if p.ndim >= 2]
    no_decay = [p for p in trainable.values() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, cfg.warmup))
    best = {"valid_auc": -1.0, "epoch": -1, "state": None}
    curve, tokens, step, t0 = [], 0, 0, time.perf_counter()
    for epoch, seqs in enumerate(epochs):
        order = rng.permutation(len(seqs))
        rec.model.train()
        losses = []
        for start in range(0, len(seqs), cfg.batch_size):
            batch = [seqs[i] for i in order[start : start + cfg.batch_size]]
            loss, n_tok = sequence_loss(rec.model, batch, rec.pad_id, rec.fmt.yes_id, rec.fmt.no_id)
            if not torch.isfinite(loss) or loss.item() > 1e3:
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch}, step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(rec.model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            tokens += n_tok
            step += 1
            progress("train", step, total_steps)
        valid = evaluate_split(rec, ws, "valid")
        curve.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_auc": valid.auc})
        if valid.auc > best["valid_auc"]:
            best = {"valid_auc": valid.auc, "epoch": epoch,  # an adapter: its factors only, not the backbone
                    "state": {k: v.detach().clone() for k, v in rec.model.state_dict().items()
                              if not partial or k in trainable}}
    seconds = time.perf_counter() - t0
    rec.model.load_state_dict(best["state"], strict=not partial)
    rec.model.eval()
    return {"train_seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds, "steps": step,
            "best_epoch": best["epoch"], "curve": curve,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def training_recipe(rec: Recommender, purpose: str) -> tuple[ModelConfig, TrainConfig, Path | None]:
    """The model and training configs (and backbone) a saved model was trained with, to train it again
    (and `adapter_of(rec.meta)`: its adapter, if any)."""
    meta = rec.meta
    if "model_config" not in meta or "train_config" not in meta:
        raise SettingsError(f"{rec.path}: no training recipe recorded, so {purpose}")
    backbone = Path(meta["backbone"]) if meta.get("backbone") else None
    return ModelConfig(**meta["model_config"]), TrainConfig(**meta["train_config"]), backbone


def train_recommender(ws: Workspace, forget: ForgetSet | None = None, model_cfg: ModelConfig | None = None,
                      train_cfg: TrainConfig | None = None, backbone: str | Path | None = None,
                      progress: ProgressFn | None = None, adapter: AdapterConfig | None = None) -> Recommender:
    """Train (or load from cache) the recommender for this data, deletion request and config.

    With `adapter` (a backbone only), a LoRA adapter is trained on the backbone's frozen weights.
    """
    model_cfg, train_cfg = model_cfg or ModelConfig(), train_cfg or TrainConfig()
    backbone = Path(backbone) if backbone else None
    require_backbone(adapter, backbone, "training")
    progress = or_silent(progress)
    key = model_key(ws, forget, model_cfg, train_cfg, backbone, adapter)

    def build(tmp: Path) -> None:
        torch.manual_seed(train_cfg.seed)  # every device's generator: dropout draws on the one it trains on
        model, tokenizer, kind = initialised_on_cpu(lambda: _new_model(ws, model_cfg, train_cfg, backbone))
        model = place(model)
        fmt = make_format(kind, tokenizer, ws.data)
        meta = {"prompt_format": kind, "key": key, "data": ws.fingerprint, "history": ws.config.history,
                "forget": asdict(forget.summary()) if forget else None, "model_config": asdict(model_cfg),
                "train_config": asdict(train_cfg), "backbone": str(backbone) if backbone else None,
                "n_params": sum(p.numel() for p in model.parameters()), "compute": current().describe()}
        wrapper = None
        if adapter is not None:  # recorded only when used: a full fine-tune's meta (and manifest) is unchanged
            wrapper = attach(model, adapter)
            model = inner(wrapper)
            meta["adapter"] = adapter.key()
            meta["trainable_params"] = trainable_count(model)
        rec = Recommender(model, tokenizer, fmt, meta)
        meta["training"] = _fit(rec, ws, forget, train_cfg, progress)
        if wrapper is not None:  # evaluated and stored merged: what load_recommender and the bridge read
            rec.model = save_and_merge(wrapper, tmp / ADAPTER).eval()
        meta["metrics"] = evaluate_model(rec, ws, forget, progress=within(progress, "train")).to_json()
        rec.save(tmp)

    path = build_or_load(ws.root, MODELS, key, build, on_event=lambda msg: progress(msg, 1, 1),
                         on_wait=lambda msg: progress(msg, 0, 1))
    return load_recommender(path, ws.data)
