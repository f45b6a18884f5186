"""LoRA on pretrained backbones: adapter ownership, merged = unmerged, training and unlearning with an adapter."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from analysis.cache import config_key
from analysis.circuits.adapter_ownership import adapter_table
from analysis.circuits.ownership import ownership_count
from analysis.config import DataConfig, ModelConfig, TrainConfig
from analysis.errors import SettingsError
from analysis.model.adapters import AdapterConfig, attach, inner, merged_copy
from analysis.model.objectives import prompt_scores

N_HEADS = 4


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=N_HEADS))


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=N_HEADS, num_key_value_heads=2,
                                        max_position_embeddings=64))


FAMILIES = pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])


def _adapted(make, rank: int = 4):
    """A tiny model with a LoRA adapter whose factors are all non-zero (as after training: B starts at 0)."""
    wrapper = attach(make().eval(), AdapterConfig(rank=rank))  # eval: GPT-2's dropout off
    model = inner(wrapper)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.2)
    return wrapper, model


@FAMILIES
@pytest.mark.parametrize("neurons", [False, True])
def test_adapter_ownership_is_a_partition_of_the_trainable_parameters(make, neurons):
    wrapper, model = _adapted(make)
    for m, prefix in ((model, ""), (wrapper, "base_model.model.")):
        table = adapter_table(m, neurons=neurons)
        count = ownership_count(m, table)
        trainable = {n for n, p in m.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith(prefix) and ".lora_" in n for n in trainable)
        for name, c in count.items():
            assert bool((c == (1 if name in trainable else 0)).all()), name
    assert {f"a{l}.h{h}" for l in range(2) for h in range(N_HEADS)} | {"m0", "m1"} <= set(table.owners)
    assert any(n.startswith("m1.n") for n in table.owners) == neurons


def _attention_parts(model, tokens):
    """Per layer: each head's z (the attention output projection's input, split by head) and each head's
    contribution to the attention output (z_h times that head's rows of the merged output weight)."""
    gpt2 = model.config.model_type == "gpt2"
    layers = model.transformer.h if gpt2 else model.model.layers
    outs = [layer.attn.c_proj if gpt2 else layer.self_attn.o_proj for layer in layers]
    seen: list[torch.Tensor] = []
    handles = [o.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach())) for o in outs]
    with torch.no_grad():
        model.eval()(input_ids=tokens)
    for h in handles:
        h.remove()
    parts = []
    for z, out in zip(seen, outs):
        z = z.view(*z.shape[:-1], N_HEADS, -1)
        w = out.weight if gpt2 else out.weight.T  # (heads x d_head, d_model) for both
        contrib = torch.einsum("bthd,hdo->btho", z, w.view(N_HEADS, z.shape[-1], -1))
        parts.append((z, contrib))
    return parts


def _apply(model, slices, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for s in slices:
            view = s.of(params[s.param])
            view.add_(torch.randn(view.shape, generator=gen))


def _moved(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Heads (dim 2) whose values changed."""
    return [h for h in range(before.shape[2]) if not torch.allclose(before[:, :, h], after[:, :, h], atol=1e-6)]


INPUT_PROJECTIONS = ("c_attn", "q_proj", "k_proj", "v_proj")


@FAMILIES
@pytest.mark.parametrize("head", [0, 2])
def test_a_heads_adapter_slices_move_only_that_heads_z_and_contribution(make, head):
    """Input-projection slices (c_attn / q,k,v rows of B) move only that head's z; output-projection slices
    (columns of A of c_proj / o_proj) move no z and only that head's contribution. Layer 0 never moves."""
    wrapper, model = _adapted(make)
    table = adapter_table(model)
    tokens = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    own = table.exclusive(f"a1.h{head}")
    into = [s for s in own if any(f".{p}." in s.param for p in INPUT_PROJECTIONS)]
    out_of = [s for s in own if s not in into]
    assert into and out_of and all(s.dim == 1 for s in out_of) and all(s.dim == 0 for s in into)
    before = _attention_parts(merged_copy(wrapper), tokens)
    _apply(model, into)
    middle = _attention_parts(merged_copy(wrapper), tokens)
    _apply(model, out_of, seed=2)
    after = _attention_parts(merged_copy(wrapper), tokens)
    for state in (middle, after):
        assert _moved(before[0][0], state[0][0]) == [] and _moved(before[0][1], state[0][1]) == []
    assert _moved(before[1][0], middle[1][0]) == [head]  # q/k/v slices: this head's z only
    assert _moved(middle[1][0], after[1][0]) == []  # output slices: no head's z ...
    assert _moved(middle[1][1], after[1][1]) == [head]  # ... only this head's contribution


def test_a_gqa_groups_kv_slices_move_the_heads_of_that_group_only():
    wrapper, model = _adapted(_llama)
    table = adapter_table(model)
    shared = [b for b in table.blocks if b.owners == ("a1.h2", "a1.h3")]
    assert len(shared) == 1 and all(".k_proj." in s.param or ".v_proj." in s.param for s in shared[0].slices)
    tokens = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    before = _attention_parts(merged_copy(wrapper), tokens)
    _apply(model, shared[0].slices)
    after = _attention_parts(merged_copy(wrapper), tokens)
    assert _moved(before[1][0], after[1][0]) == [2, 3]
    assert _moved(before[0][0], after[0][0]) == []


@FAMILIES
def test_merged_and_unmerged_scores_agree(make):
    wrapper, model = _adapted(make)
    prompts = [[3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15, 16, 17]]
    unmerged = prompt_scores(model, prompts, 0, 1, 2).detach()
    merged = prompt_scores(merged_copy(wrapper), prompts, 0, 1, 2).detach()
    base = prompt_scores(make().eval(), prompts, 0, 1, 2).detach()
    assert not torch.allclose(unmerged, base, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_adapter_settings_are_checked():
    for bad in ({"rank": 0}, {"rank": 2.5}, {"alpha": 0}, {"dropout": 1.0}, {"kind": "ia3"}):
        with pytest.raises(SettingsError):
            AdapterConfig(**bad)


# --- training and keys ------------------------------------------------------------------------


def test_default_keys_are_unchanged_and_an_adapter_enters_them_only_when_used():
    from analysis.model.train import model_key
    from analysis.unlearn.run import UnlearnConfig

    from analysis.workspace import Workspace

    ws = Workspace(None, None, DataConfig(), Path("unused"))  # no data: only the key core's fields are read
    ws.__dict__["fingerprint"] = "fixed-fingerprint"  # (a cached_property: set, not computed)
    # pinned: the values computed without adapters (issue 24 moved them on purpose: code version 2 and the
    # never-seen share in the model key, was 1d3b258c20868c70; the default lr 1e-4, was cure 582a95fdd6f55cbc,
    # ga c8a03289735667d0, salun 89bd5acd1c0c905e)
    assert model_key(ws, None, ModelConfig(), TrainConfig(), None) == "8cdaaba8c8546d6a"
    assert model_key(ws, None, ModelConfig(), TrainConfig(), None, None) == "8cdaaba8c8546d6a"
    assert model_key(ws, None, ModelConfig(), TrainConfig(), None, AdapterConfig()) != "8cdaaba8c8546d6a"
    for method, pinned in (("cure", "c78238ecb5df7fb5"), ("ga", "baa6d41daa60e45d"), ("salun", "560a60ce92c1d681")):
        assert "adapter" not in UnlearnConfig(method=method).key()
        assert config_key(UnlearnConfig(method=method).key()) == pinned
        assert UnlearnConfig(method=method, adapter=AdapterConfig(rank=2)).key()["adapter"]["rank"] == 2


def test_lora_without_a_backbone_is_a_settings_error(tiny_ws):
    from analysis.model.train import train_recommender
    from tests.conftest import TINY_MODEL, TINY_TRAIN

    with pytest.raises(SettingsError, match="backbone"):
        train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN, adapter=AdapterConfig())
    assert not (tiny_ws.root / "models").exists() or not any((tiny_ws.root / "models").iterdir())


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def lora_ws(ml100k, tmp_path_factory):
    """12 users and only the items they rated: a title-prompt Llama ranks every item for every user at
    each evaluation (on 40 users and all 1,682 items that was ~100 s of a 2-core machine per model).
    One workspace for the module, so the LoRA original and its retrain are trained once."""
    from dataclasses import replace

    from analysis.data.samples import build_interactions
    from analysis.workspace import Workspace
    from support.datasets import subset

    data = subset(ml100k, 12)
    data = replace(data, items=data.items[data.items["item_id"].isin(data.ratings["item_id"])].reset_index(drop=True))
    return Workspace(data, build_interactions(data, history=5), DataConfig(history=5),
                     tmp_path_factory.mktemp("lora") / "cache")


@pytest.fixture(scope="module")
def lora_rec(lora_ws):
    """A tiny Llama backbone (GQA) fine-tuned through a rank-2 LoRA adapter; and the backbone folder."""
    from analysis.model.train import train_recommender
    from tests.conftest import TINY_MODEL, TINY_TRAIN
    from tests.test_model import _tiny_pretrained_backbone

    backbone = _tiny_pretrained_backbone(lora_ws.root.parent / "llama", lora_ws.data.items["title"].head(300),
                                         "llama")
    before = _digests(backbone)
    rec = train_recommender(lora_ws, None, TINY_MODEL, TINY_TRAIN, backbone=backbone, adapter=AdapterConfig(rank=2))
    assert _digests(backbone) == before  # the backbone folder is only read
    return rec, backbone


def test_lora_training_stores_the_adapter_and_a_loadable_merged_model(lora_ws, lora_rec):
    import json

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from analysis.model.recommender import load_recommender

    rec, backbone = lora_rec
    adapter = rec.path / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 2
    factors = load_file(adapter / "adapter_model.safetensors")
    assert factors and all("lora_A" in k or "lora_B" in k for k in factors)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in factors.items())  # B left zero: nothing trained
    assert {p.suffix for p in rec.path.rglob("*") if p.is_file()} <= {".json", ".safetensors"}
    assert rec.meta["adapter"] == AdapterConfig(rank=2).key()
    assert 0 < rec.meta["trainable_params"] < rec.meta["n_params"] / 5
    # merged: the adapted projections moved, everything else is the backbone's
    base = dict(AutoModelForCausalLM.from_pretrained(backbone).named_parameters())
    merged = dict(load_recommender(rec.path, lora_ws.data).model.named_parameters())
    assert set(merged) == set(base)
    for name, p in merged.items():
        adapted = any(f".{m}." in name for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"))
        assert torch.equal(p, base[name]) != adapted, name


# --- unlearning -------------------------------------------------------------------------------

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _changed_rows(after: torch.Tensor, before: torch.Tensor, size: int) -> list[int]:
    """Which blocks of `size` rows differ."""
    return [i for i in range(after.shape[0] // size) if not torch.equal(after[i * size:(i + 1) * size],
                                                                        before[i * size:(i + 1) * size])]


def test_cure_with_a_lora_adapter_moves_only_what_the_groups_allow(lora_ws, lora_rec, tmp_path):
    """Given groups: a1.h1 forget-specific, all else inactive. Through the adapter, layer 1's q rows of head 1
    and k/v rows of its GQA group 0 move; other heads' q rows, group 1, layer 0, the MLPs, embeddings and
    norms stay the original's. (The loop alone: `unlearn` adds a retrain and evaluations, tested below.)"""
    from analysis.circuits.ownership import recommender_table
    from analysis.model.adapters import save_and_merge
    from analysis.unlearn.run import UnlearnConfig, unlearn_steps

    rec, _ = lora_rec
    before = {n: p.detach().clone() for n, p in rec.model.named_parameters()}
    given = {m: "inactive" for m in recommender_table(rec).scored} | {"a1.h1": "forget-specific"}
    cfg = UnlearnConfig(method="cure", steps=2, lr=0.05, batch_size=8, groups=given, adapter=AdapterConfig(rank=2))
    steps = unlearn_steps(lora_ws, rec, lora_ws.forget_set("users:0.2"), cfg, cfg.given_groups)
    assert all(torch.equal(p, before[n]) for n, p in rec.model.named_parameters())  # the original: untouched
    assert steps.rules["a1.h1"] == "forget only" and steps.rules["a0.h1"] == "frozen"
    assert set(steps.conflict.before.modules) == {f"a{l}.h{h}" for l in range(2) for h in range(4)} | \
        {"m0", "m1"}  # only heads and MLPs own adapter factors
    after = dict(save_and_merge(steps.adapter, tmp_path / "adapter").named_parameters())
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    dh = rec.model.config.head_dim
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert {n for n in changed if "layers.1.self_attn" not in n} == set()
    assert _changed_rows(after["model.layers.1.self_attn.q_proj.weight"],
                         before["model.layers.1.self_attn.q_proj.weight"], dh) == [1]
    for kv in ("k_proj", "v_proj"):
        w = f"model.layers.1.self_attn.{kv}.weight"
        assert _changed_rows(after[w], before[w], dh) == [0]
    # the output projection's B is shared by the layer's heads and A's columns are non-zero for every head
    # (a fresh adapter's A is random): every head's columns move, i.e. its contribution, never its z
    o = "model.layers.1.self_attn.o_proj.weight"
    assert _changed_rows(after[o].T, before[o].T, dh) == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["ga", "kl", "pcgrad", "salun"])
def test_the_baselines_update_the_adapter_only(lora_ws, lora_rec, method):
    from analysis.model.adapters import merged_copy
    from analysis.unlearn.run import UnlearnConfig, unlearn_steps

    rec, _ = lora_rec
    cfg = UnlearnConfig(method=method, steps=1, lr=0.05, batch_size=8, adapter=AdapterConfig(rank=2))
    steps = unlearn_steps(lora_ws, rec, lora_ws.forget_set("users:0.2"), cfg, None)
    trainable = {n for n, p in steps.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    before = dict(rec.model.named_parameters())
    changed = {n for n, p in merged_copy(steps.adapter).named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(any(f".{m}." in n for m in PROJECTIONS) for n in changed)


def test_a_cure_run_with_a_lora_adapter_discovers_circuits_and_stores_adapter_and_merged_model(lora_ws, lora_rec):
    from analysis.model.recommender import load_recommender
    from analysis.unlearn.lab import unlearn
    from analysis.unlearn.run import UnlearnConfig
    from analysis.unlearn.start import conflict_of
    from tests.test_unlearn import SMALL_CIRCUITS

    rec, _ = lora_rec
    before = {n: p.detach().clone() for n, p in rec.model.named_parameters()}
    forget = lora_ws.forget_set("users:0.2")
    cfg = UnlearnConfig(method="cure", steps=2, lr=0.01, batch_size=8, circuits=SMALL_CIRCUITS,
                        adapter=AdapterConfig(rank=2))
    run = unlearn(lora_ws, rec, forget, cfg)
    assert len(run.curves) == 2 and run.circuits["groups"] and run.config["adapter"]["rank"] == 2
    folder = Path(run.model_dir)
    assert (folder / "adapter" / "adapter_model.safetensors").is_file() and (folder / "model.safetensors").is_file()
    unlearned = load_recommender(folder, lora_ws.data)
    assert unlearned.meta["adapter"] == rec.meta["adapter"]  # the training recipe, for the retrain
    assert {n for n, p in unlearned.model.named_parameters() if not torch.equal(p, before[n])} <= \
        {n for n in before if any(f".{m}." in n for m in PROJECTIONS)}
    assert run.retrain.jsd_forget == 0.0 and 0 < run.metrics.auc_test < 1
    cmap = conflict_of(lora_ws, rec, forget, adapter=AdapterConfig(rank=2))
    assert set(cmap.modules) == set(run.conflict.before.modules)


def test_unlearning_a_from_scratch_model_with_an_adapter_is_a_settings_error():
    from analysis.model.recommender import Recommender
    from analysis.unlearn.start import trainable_copy

    rec = Recommender(_gpt2(), None, None, {"backbone": None})
    with pytest.raises(SettingsError, match="backbone"):
        trainable_copy(rec, AdapterConfig())
    with pytest.raises(SettingsError, match="retrain"):
        from analysis.unlearn.run import UnlearnConfig

        UnlearnConfig(method="retrain", adapter=AdapterConfig())


@pytest.mark.parametrize("argv, message", [
    (["train", "--adapter", "lora"], "needs a pretrained --backbone"),
    (["unlearn", "--forget", "users:0.1", "--method", "cure", "--adapter", "lora"], "needs a pretrained --backbone"),
    (["train", "--lora-rank", "4"], "--lora-rank applies only with --adapter lora"),
    (["train", "--adapter", "lora", "--backbone", "x", "--lora-rank", "0"], "--lora-rank must be at least 1"),
    (["conflict", "--forget", "users:0.1", "--adapter", "lora", "--backbone", "x", "--lora-alpha", "0"],
     "--lora-alpha must be a positive number"),
])
def test_cli_adapter_options_fail_in_one_line(argv, message, capsys, tmp_path):
    from analysis.cli import main

    assert main(argv + ["--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "models").exists()
