"""Unlearning: module slices, conflict, update rules, runs against retrain, nothing lost on failure."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.circuits.discover import CircuitSettings
from analysis.circuits.groups import Group
from analysis.errors import SettingsError, TrainingError
from analysis.model.train import train_recommender
from analysis.unlearn.conflict import ConflictMap, conflict_map
from analysis.unlearn.lab import list_runs, unlearn
from analysis.unlearn.record import RunRecord
from analysis.unlearn.methods import UnlearningMethod, RetainSpecific, circuit_rules, project_off
from analysis.circuits.ownership import recommender_table
from analysis.unlearn.modules import flat, module_map, owned_mask, parse_modules
from analysis.unlearn.run import UnlearnConfig
from tests.conftest import TINY_MODEL, TINY_TRAIN

SMALL_CIRCUITS = CircuitSettings(n_prompts=8, stability_seeds=1, batch_size=8, ig_steps=2)


@pytest.fixture
def tiny_rec(tiny_ws):
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)


def _llama(n_kv: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=64))


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=4))


@pytest.mark.parametrize("make", [_gpt2, lambda: _llama(4)], ids=["gpt2", "llama"])
def test_a_gradient_masked_to_one_head_leaves_every_other_module_untouched(make):
    model = make()
    table = module_map(model)
    assert set(table.owners) >= {f"a{l}.h{h}" for l in range(2) for h in range(4)} | {"m0", "m1", "logits"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = owned_mask(model, table, ["a0.h1"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            p -= torch.randn_like(p) * masks[n]
    after = dict(model.named_parameters())
    for m in table.owners:  # the head's own slices, and ln_1 which all heads of layer 0 read, moved
        moved = any(not torch.equal(s.of(after[s.param]), s.of(before[s.param])) for s in table.exclusive(m))
        assert moved == (m == "a0.h1"), m
    assert set(table.owners) - {"a0.h1"} >= {m for m in table.owners if m.startswith("a0.")} - {"a0.h1"}


@pytest.mark.parametrize("make", [_gpt2, lambda: _llama(4)], ids=["gpt2", "llama"])
def test_a_heads_slices_change_only_that_heads_output(make, tmp_path):
    """The map agrees with the model: editing a0.h2's slices moves a0.h2's hook_z and no other head's."""
    from transformer_lens.model_bridge import TransformerBridge

    model = make()
    tokens = torch.randint(0, 50, (2, 7))

    def z_of(folder):
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        model.save_pretrained(folder)  # with a word-level tokenizer: boot_transformers wants one (no hub here)
        words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(50)}, unk_token="w0"))
        PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w0").save_pretrained(folder)
        bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
        return bridge.run_with_cache(tokens, names_filter=lambda n: n == "blocks.0.attn.hook_z")[1]

    clean = z_of(tmp_path / "clean")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for s in module_map(model).exclusive("a0.h2"):
            if "o_proj" not in s.param and "c_proj" not in s.param:  # Q, K, V feed z; O comes after it
                s.of(params[s.param]).add_(torch.randn_like(s.of(params[s.param])))
    edited = z_of(tmp_path / "edited")
    moved = (clean["blocks.0.attn.hook_z"] - edited["blocks.0.attn.hook_z"]).abs().amax(dim=(0, 1, 3))
    assert moved[2] > 1e-3 and float(moved[[0, 1, 3]].max()) == 0.0


def test_grouped_query_heads_share_their_key_value_slices():
    mapping = module_map(_llama(2)).owners
    k = lambda m: [s for s in mapping[m] if "k_proj" in s.param][0]  # noqa: E731
    assert k("a0.h0") == k("a0.h1") and k("a0.h0") != k("a0.h2")


def test_module_names_are_checked():
    mapping = module_map(_gpt2())
    assert parse_modules("a0.h1, m1", mapping) == ("a0.h1", "m1")
    with pytest.raises(SettingsError, match="unknown modules"):
        parse_modules("a9.h9", mapping)
    with pytest.raises(SettingsError, match="no modules"):
        parse_modules(" , ", mapping)


def test_conflict_summaries_on_hand_made_gradients():
    model = _gpt2()
    mapping = module_map(model)
    g = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    neg = {n: -t for n, t in g.items()}
    cmap = conflict_map(mapping, g, neg)
    assert cmap.negative_share == 1.0 and cmap.weighted_cos == pytest.approx(-1.0)
    assert conflict_map(mapping, g, g).negative_share == 0.0
    heat = cmap.heatmap(2, 4)
    assert len(heat) == 2 and len(heat[0]) == 5 and heat[1][4] == pytest.approx(-1.0)
    assert ConflictMap.from_json(json.loads(json.dumps(cmap.to_json()))).cos == cmap.cos


def test_projection_removes_only_a_conflicting_component():
    r = torch.tensor([1.0, 0.0])
    assert torch.equal(project_off(torch.tensor([1.0, 1.0]), r), torch.tensor([1.0, 1.0]))
    assert torch.allclose(project_off(torch.tensor([-2.0, 1.0]), r), torch.tensor([0.0, 1.0]))


def test_cure_rules_per_group():
    model = _gpt2()
    table = module_map(model)
    mapping = {m: table.exclusive(m) for m in table.owners}  # ln_1 is shared by the heads: checked below
    torch.manual_seed(1)
    g_f = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    g_r = {n: -g_f[n] + 0.3 * torch.randn_like(p) for n, p in model.named_parameters()}  # mostly conflicting
    groups = {"a0.h0": Group.FORGET, "a0.h1": Group.RETAIN, "a0.h2": Group.SHARED, "m0": Group.INACTIVE}
    for option in RetainSpecific:
        step = circuit_rules(g_f, g_r, 1.0, table, groups, option)
        d = lambda m: flat(step.direction, mapping[m])  # noqa: E731
        fp = lambda m: flat(step.forget_part, mapping[m])  # noqa: E731
        assert torch.equal(d("a0.h0"), flat(g_f, mapping["a0.h0"]))
        expected_retain = flat(g_r, mapping["a0.h1"]) if option is RetainSpecific.RETAIN else 0 * d("a0.h1")
        assert torch.equal(d("a0.h1"), expected_retain)
        shared_f, shared_r = fp("a0.h2"), flat(g_r, mapping["a0.h2"])
        assert abs(float(shared_f @ shared_r)) < 1e-3 * float(shared_f.norm() * shared_r.norm())
        assert torch.allclose(d("a0.h2"), shared_f + shared_r)
        for frozen in ("m0", "a1.h3"):  # inactive, and a module the groups do not list
            assert float(d(frozen).abs().max()) == 0.0
        # the token embedding's owners are not listed: inactive, frozen
        assert float(step.direction["transformer.wte.weight"].abs().max()) == 0.0
        # ln_1 of layer 0 is read by forget, retain and shared heads: it follows the task-shared rule
        ln1 = flat(step.forget_part, [s for s in table.owners["a0.h0"] if "ln_1" in s.param])
        ln1_r = flat(g_r, [s for s in table.owners["a0.h0"] if "ln_1" in s.param])
        assert float(ln1 @ ln1_r) >= -1e-3 * float(ln1.norm() * ln1_r.norm())
        # logits (final norm) have no group: frozen; layer 1's heads share nothing active
        assert {"a0.h0", "a0.h2"} <= set(step.updated) and "m0" not in step.updated and "logits" not in step.updated


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "kl", "pcgrad", "cure", "retrain"])
def test_every_method_runs_on_a_copy_and_is_compared_with_retrain(tiny_ws, tiny_rec, method):
    forget = tiny_ws.forget_set("users:0.2")
    original = {n: p.clone() for n, p in tiny_rec.model.state_dict().items()}
    cfg = UnlearnConfig(method=method, steps=3, lr=0.01, batch_size=8, circuits=SMALL_CIRCUITS)
    run = unlearn(tiny_ws, tiny_rec, forget, cfg)
    assert all(torch.equal(original[n], p) for n, p in tiny_rec.model.state_dict().items())
    for who in (run.metrics, run.retrain, run.original):
        assert all(np.isfinite([who.jsd_forget, who.jsd_test, who.auc_test, who.auc_forget, who.mia_auc]))
    assert run.retrain.jsd_forget == 0.0
    assert run.retrain_seconds > 0 and run.seconds > 0
    if method != "retrain":
        assert len(run.curves) == 3
        for when in (run.conflict.before, run.conflict.after):
            assert 0 <= when.negative_share <= 1
        assert 0 <= run.conflict.applied.negative_share <= 1
        assert (tiny_ws.root / "runs" / run.name / "model" / "model.safetensors").is_file()
        assert {"forward", "backward", "rule", "conflict maps"} <= set(run.stage_seconds)
        assert sum(run.stage_seconds.values()) <= run.seconds + sum(  # the split never exceeds the run
            v for k, v in run.stage_seconds.items() if k == "conflict before/after") + 1e-6
    stored = {r.run_dir: r for r in list_runs(tiny_ws.root)}
    assert stored[run.run_dir] == run  # what a reader loads is what the run handed back
    assert RunRecord.from_json(run.to_json(), run.run_dir) == run  # and the JSON round trip loses nothing


def test_cure_applies_no_conflicting_forget_update_while_graddiff_does(tiny_ws, tiny_rec):
    forget = tiny_ws.forget_set("users:0.2")
    share = {m: unlearn(tiny_ws, tiny_rec, forget, UnlearnConfig(method=m, steps=3, lr=0.01, batch_size=8,
                                                                 circuits=SMALL_CIRCUITS))
             .conflict.applied.negative_share for m in ("cure", "graddiff")}
    assert share["cure"] == 0.0 and share["graddiff"] > 0.0


def test_selective_updates_only_the_named_modules(tiny_ws, tiny_rec):
    from analysis.model.recommender import load_recommender

    forget = tiny_ws.forget_set("users:0.2")
    run = unlearn(tiny_ws, tiny_rec, forget, UnlearnConfig(method="selective", modules=("a1.h0",), steps=2, lr=0.05,
                                                           batch_size=8, circuits=SMALL_CIRCUITS))
    after = load_recommender(run.model_dir, tiny_ws.data).model
    mapping = recommender_table(tiny_rec).owners
    before = dict(tiny_rec.model.named_parameters())
    changed = {m for m, slices in mapping.items()
               if any(not torch.equal(s.of(dict(after.named_parameters())[s.param]), s.of(before[s.param]))
                      for s in slices)}
    # a1.h0 and the ln_1 all heads of layer 1 read (so those heads count as touched too)
    assert changed == {"a1.h0", "a1.h1"}
    assert run.rules["a1.h0"] == "projected forget + retain" and run.rules["m0"] == "frozen"
    with pytest.raises(SettingsError, match="unknown modules"):
        unlearn(tiny_ws, tiny_rec, forget, UnlearnConfig(method="selective", modules=("a7.h0",), steps=1,
                                                         circuits=SMALL_CIRCUITS))
    with pytest.raises(SettingsError, match="needs --modules"):
        UnlearnConfig(method="selective")


def test_an_exploding_run_stops_and_leaves_nothing_behind(tiny_ws, tiny_rec):
    forget = tiny_ws.forget_set("users:0.2")
    before = {n: p.clone() for n, p in tiny_rec.model.state_dict().items()}
    with pytest.raises(TrainingError, match="nothing was stored"):
        unlearn(tiny_ws, tiny_rec, forget, UnlearnConfig(method="ga", steps=50, lr=1e4, batch_size=8))
    assert list_runs(tiny_ws.root) == []
    runs = tiny_ws.root / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]  # no temp dir left
    assert all(torch.equal(before[n], p) for n, p in tiny_rec.model.state_dict().items())


def test_bad_configs_are_clear_errors():
    with pytest.raises(SettingsError, match="unknown method"):
        UnlearnConfig(method="forget-harder")
    with pytest.raises(SettingsError, match="learning rate"):
        UnlearnConfig(method="ga", lr=float("nan"))
    assert UnlearningMethod("cure") is UnlearningMethod.CURE


def test_cure_with_given_groups_uses_them_instead_of_discovering(tiny_ws, tiny_rec, monkeypatch):
    import analysis.unlearn.lab as lab
    from analysis.model.recommender import load_recommender

    def no_discovery(*a, **k):
        raise AssertionError("circuits were discovered although groups were given")

    monkeypatch.setattr(lab, "discover_groups", no_discovery)
    forget = tiny_ws.forget_set("users:0.2")
    table = recommender_table(tiny_rec)
    mapping = table.owners
    given = {m: "inactive" for m in table.scored} | {"a1.h1": "forget-specific"}
    run = unlearn(tiny_ws, tiny_rec, forget, UnlearnConfig(method="cure", steps=2, lr=0.05, batch_size=8,
                                                           groups=given))
    assert run.circuits["given"] and run.circuits["groups"]["a1.h1"] == "forget-specific"
    after = dict(load_recommender(run.model_dir, tiny_ws.data).model.named_parameters())
    before = dict(tiny_rec.model.named_parameters())
    changed = {m for m, slices in mapping.items()
               if any(not torch.equal(s.of(after[s.param]), s.of(before[s.param])) for s in slices)}
    assert changed == {"a1.h1", "a1.h0"}  # its slices and layer 1's shared ln_1 (read by a1.h0 too)
    # given groups are part of the run's identity; none given keeps the stored key of older runs
    assert "groups" in UnlearnConfig(groups=given).key() and "groups" not in UnlearnConfig().key()

    with pytest.raises(SettingsError, match="other modules"):  # groups from a bigger model
        unlearn(tiny_ws, tiny_rec, forget, UnlearnConfig(method="cure", steps=1, groups=given | {"a7.h0": "inactive"}))
    with pytest.raises(SettingsError, match="unknown circuit group"):
        UnlearnConfig(groups={"m0": "sort-of-shared"})
    with pytest.raises(SettingsError, match="only apply to cure and selective"):
        UnlearnConfig(method="ga", groups=given)


def test_a_model_without_a_recorded_recipe_cannot_be_retrained(tiny_rec):
    from types import SimpleNamespace

    from analysis.model.train import training_recipe

    model_cfg, train_cfg, backbone = training_recipe(tiny_rec, "unused")
    assert (model_cfg, train_cfg, backbone) == (TINY_MODEL, TINY_TRAIN, None)
    foreign = SimpleNamespace(meta={"model_config": {}}, path="/models/foreign")  # e.g. a hand-made checkpoint
    with pytest.raises(SettingsError, match="foreign: no training recipe recorded, so there is no retrain"):
        training_recipe(foreign, "there is no retrain to compare with")


def test_one_scoring_pass_over_the_distinct_samples_equals_scoring_each_set(tiny_ws, tiny_rec):
    """model_view scores every sample set from one pass over their distinct samples (the sets overlap):
    each set's scores equal scoring its own prompts alone."""
    from analysis.model.sequences import PromptBuilder
    from analysis.unlearn.compare import sample_sets, score_sets

    forget = tiny_ws.forget_set("users:0.2")
    sets = sample_sets(tiny_ws, forget)
    builder = PromptBuilder(tiny_rec.fmt, tiny_ws.interactions)
    together = score_sets(tiny_rec, builder, sets)
    assert set(together) == set(sets)
    total = sum(len(rows) for rows in sets.values())
    distinct = len(pd.concat([rows[["user_id", "pos", "item_id"]] for rows in sets.values()]).drop_duplicates())
    assert distinct < total  # the sets do overlap: the pass is shorter than the sum
    for name, rows in sets.items():
        alone = tiny_rec.score_prompts(builder.prompts(rows))
        assert together[name] == pytest.approx(alone, abs=1e-5), name


def test_a_run_stored_without_rankings_gets_its_agreement_on_demand(tiny_ws, tiny_rec):
    """A study's cells skip the top-10 lists (no section reads them); Compare computes the agreement later,
    and it equals what comparing with rankings stores."""
    from analysis.model.recommender import load_recommender
    from analysis.unlearn.compare import compare_to_retrain, ranking_agreement
    from analysis.unlearn.lab import retrain_for

    forget = tiny_ws.forget_set("users:0.2")
    run = unlearn(tiny_ws, tiny_rec, forget, UnlearnConfig(method="npo", steps=2, batch_size=8), rankings=False)
    assert run.comparison.ranking_agreement is None and run.yardstick.retrain_distance is not None
    model = load_recommender(run.model_dir, tiny_ws.data)
    later = ranking_agreement(model, tiny_rec, tiny_ws, forget)
    retrain, _ = retrain_for(tiny_ws, tiny_rec, forget)
    stored = compare_to_retrain(model, retrain, tiny_rec, tiny_ws, forget).ranking_agreement
    assert later == stored
    assert all(0.0 <= v <= 1.0 for v in (later.forget_users, later.retain_users) if v is not None)


def test_npo_reads_the_originals_forget_scores_once_per_sample_for_the_whole_run(tiny_ws, tiny_rec):
    """The frozen original's scores are remembered per forget sample: a second epoch costs no reference
    pass, and the remembered scores equal scoring the batch afresh."""
    from analysis.unlearn.registry import StepContext, reference_forget_scores
    from analysis.unlearn.start import Batches

    forget = tiny_ws.forget_set("users:0.2")
    batches = Batches(tiny_ws, tiny_rec, forget, 8, 0)
    calls = []

    def score(model, prompts):
        calls.append(len(prompts))
        return tiny_rec_scores(model, prompts)

    def tiny_rec_scores(model, prompts):
        from analysis.model.objectives import prompt_scores
        return prompt_scores(model, prompts, tiny_rec.pad_id, tiny_rec.fmt.yes_id, tiny_rec.fmt.no_id)

    memo: dict = {}
    n = len(forget.forget_samples)
    epochs = batches.forget_epochs()
    for _ in range(2 * -(-n // 8)):  # two epochs
        fp, fl, rows = next(epochs)
        ctx = StepContext(tiny_rec.model, tiny_rec.model.eval(), score, fp, fl, [], torch.zeros(0), None, None, None,
                          None, None, run_memo=memo, forget_rows=rows)
        remembered = reference_forget_scores(ctx)
        with torch.no_grad():
            torch.testing.assert_close(remembered, tiny_rec_scores(tiny_rec.model, fp), atol=1e-5, rtol=1e-5)
    assert sum(calls) == n and len(memo["reference_forget"]) == n  # each sample scored once, in epoch one
