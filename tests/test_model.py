"""The recommender: tokenizer, prompts, training, save/load through transformers and TransformerBridge."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from analysis.data.forget import retained_training
from analysis.errors import TrainingError
from analysis.model.evaluate import ModelEvaluation
from analysis.model.prompts import WordPrompt, build_word_tokenizer, item_token
from analysis.model.recommender import load_recommender
from analysis.model.recommender import answer_scores
from analysis.model.sequences import PromptBuilder, pad_batch
from analysis.model.train import train_recommender
from tests.conftest import TINY_MODEL, TINY_TRAIN


@pytest.fixture
def tiny_rec(tiny_ws):
    return train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)


def test_word_tokenizer_round_trip(tiny_data, tmp_path):
    tok = build_word_tokenizer(tiny_data)
    vocab = tok.get_vocab()
    assert all(item_token(i) in vocab for i in tiny_data.items["item_id"])
    assert "Yes" in vocab and "No" in vocab
    text = "user age:25-34 gender:M occupation:technician rated: item_1 ★4 item_50 ★1 item_7"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == ids


def test_first_target_of_a_training_sequence_is_the_canonical_prompt(tiny_ws):
    fmt = WordPrompt(build_word_tokenizer(tiny_ws.data))
    builder = PromptBuilder(fmt, tiny_ws.interactions)
    retained = retained_training(tiny_ws.interactions, None)
    seqs = builder.training_sequences(retained, per_sequence=4, offset=0)
    user_rows = tiny_ws.interactions.frame[tiny_ws.interactions.frame["user_id"] == 1]
    first_sample = user_rows[user_rows["pos"] == tiny_ws.interactions.history]
    canonical = builder.prompts(first_sample)[0]
    seq = seqs[0]
    assert seq.ids[: seq.answer_positions[0] + 1] == canonical
    assert seq.labels[0] == int(first_sample["label"].iloc[0])
    # every training sample is answered exactly once per epoch
    n_answers = sum(len(s.labels) for s in seqs)
    assert n_answers == len(tiny_ws.interactions.split("train"))


def test_forgotten_interactions_are_neither_labels_nor_context(tiny_ws):
    forget = tiny_ws.forget_set("interactions:0.2", seed=3)
    fmt = WordPrompt(build_word_tokenizer(tiny_ws.data))
    builder = PromptBuilder(fmt, tiny_ws.interactions)
    retained = retained_training(tiny_ws.interactions, forget)
    seqs = builder.training_sequences(retained, per_sequence=4, offset=1)
    # The items of each sequence are a contiguous run of that user's *retained* time line.
    inv = {v: k for k, v in fmt.tokenizer.get_vocab().items()}
    timelines = {u: [f"item_{i}" for i in rows["item_id"]] for u, rows in retained.groupby("user_id")}
    lost = {(u, i) for u, i in zip(forget.forgotten["user_id"], forget.forgotten["item_id"])}
    for s in seqs:
        items = [inv[t] for t in s.ids if inv[t].startswith("item_")]
        line = timelines[s.user_id]
        starts = [k for k in range(len(line)) if line[k : k + len(items)] == items]
        assert starts, f"sequence of user {s.user_id} is not a run of the retained time line"
        assert not any((s.user_id, int(i[5:])) in lost for i in items)
    # answers = retained train samples with at least H retained ratings before them
    n_answers = sum(len(s.labels) for s in seqs)
    positions = retained.groupby("user_id").cumcount()
    expected = int(((retained["split"] == "train") & (positions >= tiny_ws.interactions.history)).sum())
    assert n_answers == expected
    assert expected < len(tiny_ws.interactions.split("train"))


def _check_unrated_tails(rec, ws, n_seqs: int = 4) -> None:
    """Each tail item is one the user never rated, labelled 0, and its score (4D mask, shared position)
    equals scoring the canonical prompt "prefix + that item" alone; the prefix is untouched by the tail."""
    from analysis.model.sequences import tail_attention
    from analysis.model.train import sequence_loss

    builder = PromptBuilder(rec.fmt, ws.interactions)
    retained = retained_training(ws.interactions, None)
    seqs = builder.training_sequences(retained, per_sequence=4, offset=0, negatives=3, rng=np.random.default_rng(0))
    plain = builder.training_sequences(retained, per_sequence=4, offset=0)
    assert len(seqs) == len(plain) and all(len(s.tail) == 3 for s in seqs)
    rated = {u: set(rows["item_id"]) for u, rows in retained.groupby("user_id")}
    batch = seqs[:n_seqs]
    ids = torch.from_numpy(pad_batch([s.ids for s in batch], rec.pad_id))
    mask, positions = tail_attention(batch, ids.shape[1], torch.float32)
    rec.model.eval()
    with torch.no_grad():
        hidden = rec.model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    score = lambda h: answer_scores(rec.model, h, rec.fmt.yes_id, rec.fmt.no_id).item()  # noqa: E731
    for i, (s, p) in enumerate(zip(batch, plain)):
        assert s.labels[: len(p.labels)] == p.labels and s.labels[len(p.labels):] == [0, 0, 0]
        assert s.ids[: len(p.ids)] == p.ids  # the plain sequence, then its last rating, then the tail
        a = s.prefix_length
        for length in s.tail:
            item = s.ids[a : a + length]
            owner = [i for i in ws.data.items["item_id"] if rec.fmt.item_ids(i) == item]
            assert owner and not set(owner) & rated[s.user_id]
            want = rec.score_prompts([s.ids[: s.prefix_length] + item])[0]
            assert score(hidden[i, a + length - 1]) == pytest.approx(want, abs=1e-4)
            a += length
        for k in range(0, s.prefix_length, 3):
            assert score(hidden[i, k]) == pytest.approx(rec.score_prompts([s.ids[: k + 1]])[0], abs=1e-4)
    loss, _ = sequence_loss(rec.model, batch, rec.pad_id, rec.fmt.yes_id, rec.fmt.no_id)
    assert torch.isfinite(loss)


def test_unrated_negatives_see_exactly_a_canonical_prompt(tiny_ws, tiny_rec):
    _check_unrated_tails(tiny_rec, tiny_ws)


def test_candidate_scoring_with_shared_context_equals_full_prompts(tiny_ws, tiny_rec):
    builder = PromptBuilder(tiny_rec.fmt, tiny_ws.interactions)
    rows = tiny_ws.interactions.split("test")
    rows = rows[rows["user_id"] == rows["user_id"].iloc[0]]
    pos = int(rows["pos"].iloc[0])
    items = [1, 2, 3, 50, 100, 181]
    context = builder.context(int(rows["user_id"].iloc[0]), pos)
    full = tiny_rec.score_prompts([context + tiny_rec.fmt.item_ids(i) for i in items])
    cached = tiny_rec.score_candidates(context, [tiny_rec.fmt.item_ids(i) for i in items])
    np.testing.assert_allclose(cached, full, atol=1e-5)


def test_save_load_equal_logits_in_transformers_and_bridge(tiny_ws, tiny_rec):
    from transformer_lens.model_bridge import TransformerBridge

    path = tiny_rec.path
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    prompt = PromptBuilder(tiny_rec.fmt, tiny_ws.interactions).prompts(tiny_ws.interactions.split("test").head(3))
    ids = torch.tensor(prompt)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    with torch.no_grad():
        hf_logits = hf(ids).logits
        bridge_logits, cache = bridge.run_with_cache(ids)
    torch.testing.assert_close(bridge_logits, hf_logits, atol=1e-4, rtol=1e-4)
    for layer in range(TINY_MODEL.n_layer):
        assert cache[f"blocks.{layer}.attn.hook_z"].shape[-2] == TINY_MODEL.n_head
        assert f"blocks.{layer}.hook_mlp_out" in cache
    # the score is the Yes/No logit difference at the last token
    diff = hf_logits[:, -1, tiny_rec.fmt.yes_id] - hf_logits[:, -1, tiny_rec.fmt.no_id]
    np.testing.assert_allclose(tiny_rec.score_prompts(prompt), diff.numpy(), atol=1e-4)


def test_training_is_deterministic_and_cached(tiny_ws, tiny_rec, tmp_path):
    again = train_recommender(replace(tiny_ws, root=tmp_path / "other"), None, TINY_MODEL, TINY_TRAIN)
    assert again.path != tiny_rec.path
    assert again.meta["metrics"] == tiny_rec.meta["metrics"]
    for (name, a), (_, b) in zip(tiny_rec.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    # same configuration, same cache: loaded, not retrained
    loaded = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    assert loaded.path == tiny_rec.path
    assert loaded.meta["training"]["train_seconds"] == tiny_rec.meta["training"]["train_seconds"]


def test_metrics_are_recorded_and_sensible(tiny_rec):
    m = ModelEvaluation.of(tiny_rec)
    assert m.to_json() == tiny_rec.meta["metrics"]  # the typed record reads and writes the stored layout exactly
    assert all(np.isfinite(v) for v in (m.test.auc, m.test.acc, m.test.logloss, m.valid.auc))
    assert 0.0 <= m.ranking.hit_rate <= 1.0 and m.ranking.users > 0
    assert m.forget is None and m.test_retained_users is None  # no forget set: nothing to report on one
    assert tiny_rec.meta["training"]["tokens"] > 0


def test_retrain_excludes_the_forget_set(tiny_ws, tiny_rec):
    forget = tiny_ws.forget_set("users:3,5")
    retrain = train_recommender(tiny_ws, forget, TINY_MODEL, TINY_TRAIN)
    assert retrain.path != tiny_rec.path
    assert retrain.meta["forget"]["spec"] == "users:3,5"
    m = ModelEvaluation.of(retrain)
    assert m.forget.n > 0 and m.test_retained_users.n > 0
    assert m.to_json() == retrain.meta["metrics"]


def test_nan_loss_stops_training_and_writes_nothing(tiny_ws):
    bad = replace(TINY_TRAIN, lr=1e30)  # explodes within a step or two
    with pytest.raises(TrainingError, match="loss became"):
        train_recommender(tiny_ws, None, TINY_MODEL, bad)
    models = tiny_ws.root / "models"
    assert not models.exists() or not any(p for p in models.iterdir())


def test_corrupted_model_is_quarantined_and_rebuilt(tiny_ws, tiny_rec):
    weights = tiny_rec.path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-10] ^= 0xFF
    weights.write_bytes(bytes(blob))
    rebuilt = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    assert rebuilt.path == tiny_rec.path
    assert any((tiny_ws.root / "quarantine").iterdir())
    assert rebuilt.meta["metrics"] == tiny_rec.meta["metrics"]


def _tiny_pretrained_backbone(folder, titles, family: str = "gpt2"):
    """A randomly initialised GPT-2 or Llama with a byte-level BPE tokenizer trained here (no hub access)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM

    bpe = ByteLevelBPETokenizer()
    corpus = list(titles) + ["A user (age 25-34, gender M, occupation technician) rated movies from 1 to 5 stars.",
                             "Will they like the last movie? Yes or No. 1 2 3 4 5 stars."]
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1)
    folder.mkdir(parents=True)
    bpe.save(str(folder / "tokenizer.json"))
    tok = GPT2TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=2))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=512))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pretrained_backbone_path_renders_titles_and_fine_tunes(tiny_ws, tmp_path, family):
    backbone = _tiny_pretrained_backbone(tmp_path / f"{family}-tiny", tiny_ws.data.items["title"].head(300), family)
    rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN, backbone=backbone)
    assert rec.meta["prompt_format"] == "title"
    prompt = PromptBuilder(rec.fmt, tiny_ws.interactions).prompts(tiny_ws.interactions.split("test").head(1))[0]
    text = rec.tokenizer.decode(prompt)
    assert "stars." in text and text.rstrip().endswith(":")
    assert np.isfinite(ModelEvaluation.of(rec).test.auc)
    reloaded = load_recommender(rec.path, tiny_ws.data)
    np.testing.assert_allclose(reloaded.score_prompts([prompt]), rec.score_prompts([prompt]))
    # multi-token titles through the shared-context cache equal full prompts
    context = PromptBuilder(rec.fmt, tiny_ws.interactions).context(1, 12)
    items = [1, 2, 50, 181]
    np.testing.assert_allclose(rec.score_candidates(context, [rec.fmt.item_ids(i) for i in items]),
                               rec.score_prompts([context + rec.fmt.item_ids(i) for i in items]), atol=1e-4)
    assert json.loads((rec.path / "recommender.json").read_text())["backbone"] == str(backbone)
    _check_unrated_tails(rec, tiny_ws, n_seqs=2)  # multi-token titles as tail items (and Llama's rotary positions)
