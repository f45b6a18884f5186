"""Device and precision: requests checked against the machine, models placed once, keys unchanged on the CPU.

No GPU here: the device tests check the CPU placement and the errors for a device this
machine lacks; the precision tests run the whole pipeline (train, score, trace, circuits,
CURE) in bfloat16 on the CPU, which exercises every place a tensor is created or read back.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import cli
from analysis.cache import config_key
from analysis.circuits.discover import CircuitSettings, discover_circuits
from analysis.circuits.trace import load_bridge
from analysis.compute import Compute, current, resolve
from analysis.errors import SettingsError
from analysis.model.sequences import PromptBuilder
from analysis.model.train import model_key, train_recommender
from analysis.unlearn.lab import unlearn
from analysis.unlearn.run import UnlearnConfig
from tests.conftest import TINY_MODEL, TINY_TRAIN

SMALL_CIRCUITS = CircuitSettings(n_prompts=8, stability_seeds=1, batch_size=8, ig_steps=2)


def test_requests_are_checked_against_this_machine():
    assert resolve("cpu") == Compute("cpu", "float32")
    assert resolve("auto").device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert resolve(" CPU ", "BFloat16") == Compute("cpu", "bfloat16")
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:1"):
            with pytest.raises(SettingsError, match="CUDA is not available"):
                resolve(device)
    with pytest.raises(SettingsError, match="unknown --device 'tpu'"):
        resolve("tpu")
    with pytest.raises(SettingsError, match="unknown --dtype"):
        resolve("cpu", "float8")
    with pytest.raises(SettingsError, match="float16 is not supported .* CPU"):
        resolve("cpu", "float16")
    with pytest.raises(SettingsError, match="--eval-batch"):
        resolve("cpu", "float32", eval_batch=0)


def test_float32_keys_are_the_keys_made_before_devices_existed():
    config = {"kind": "recommender", "train": {"lr": 0.002}}
    before = config_key(config)
    import hashlib
    import json
    expected = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert before == expected  # no compute entry on the default path
    with resolve("cpu", "float32").active():
        assert config_key(config) == expected
    with resolve("cpu", "bfloat16").active():
        assert config_key(config) != expected  # precision changes results, so it changes keys
    assert current() == Compute()  # restored after the block


def test_the_active_compute_is_per_thread():
    import threading

    seen = {}
    with resolve("cpu", "bfloat16").active():
        worker = threading.Thread(target=lambda: seen.setdefault("other", current()))
        worker.start()
        worker.join()
        seen["here"] = current()
    assert seen == {"other": Compute(), "here": Compute("cpu", "bfloat16")}


def test_model_and_bridge_live_on_the_requested_device_and_dtype(tiny_ws):
    float32 = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
    with resolve("cpu", "bfloat16").active():
        rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
        bridge = load_bridge(rec)
        assert rec.path != float32.path  # a model trained in another precision is another artefact
        assert model_key(tiny_ws, None, TINY_MODEL, TINY_TRAIN, None) == rec.meta["key"]
        for module in (rec.model, bridge):
            tensors = list(module.parameters())
            assert tensors and {(t.device.type, t.dtype) for t in tensors} == {("cpu", torch.bfloat16)}
        assert rec.meta["compute"] == "cpu, bfloat16"
    assert float32.meta["compute"] == "cpu, float32"
    assert {p.dtype for p in float32.model.parameters()} == {torch.float32}


def test_the_whole_pipeline_runs_in_bfloat16(tiny_ws):
    """Training, scoring, circuits (EAP-IG + patching) and a CURE run, all in bfloat16: every tensor the
    code creates must follow the model's precision, and every value read back must be finite."""
    with resolve("cpu", "bfloat16", eval_batch=7).active():
        rec = train_recommender(tiny_ws, None, TINY_MODEL, TINY_TRAIN)
        frame = tiny_ws.interactions.frame
        rows = frame[frame["split"] == "test"].head(20)
        scores = rec.score_prompts(PromptBuilder(rec.fmt, tiny_ws.interactions).prompts(rows))
        assert scores.dtype == np.float64 and np.isfinite(scores).all()
        forget = tiny_ws.forget_set("users:0.2")
        circuits = discover_circuits(tiny_ws, rec, forget, SMALL_CIRCUITS)
        assert circuits.node_groups.sizes()
        run = unlearn(tiny_ws, rec, forget, UnlearnConfig(method="cure", steps=2, lr=0.01, batch_size=8,
                                                          circuits=SMALL_CIRCUITS))
        assert np.isfinite(run.metrics.auc_test) and np.isfinite(run.retrain.auc_test)


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "CUDA is not available"),
    (["--device", "gpu0"], "unknown --device 'gpu0'"),
    (["--eval-batch", "0"], "--eval-batch must be at least 1"),
])
def test_the_cli_refuses_a_device_it_cannot_use_in_one_line(argv, message, tmp_path, capsys):
    if torch.cuda.is_available() and "cuda" in argv:
        pytest.skip("this machine has CUDA")
    code = cli.main(["prepare", "--cache", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_out_of_memory_names_the_settings_that_bound_memory(monkeypatch, tmp_path, capsys):
    def no_room(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cli.entry, "run", no_room)  # what main calls (analysis/cli/entry.py)
    code = cli.main(["prepare", "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "out of memory" in err and "--eval-batch" in err and "--train-batch" in err
    assert "Traceback" not in err


def test_a_model_is_initialised_from_the_cpu_generator_wherever_it_will_train(tiny_ws):
    """Under an active accelerator torch's factories create on it, and its generator draws other numbers.
    The new model is built under the CPU's default device, so one seed gives one set of initial weights,
    which is what the device-free cache key promises. The meta device stands in for an accelerator here:
    a model created there would have no values at all."""
    from analysis.model.adapters import AdapterConfig, attach
    from analysis.compute import initialised_on_cpu
    from analysis.model.train import _new_model

    def build():
        torch.manual_seed(TINY_TRAIN.seed)
        return initialised_on_cpu(lambda: _new_model(tiny_ws, TINY_MODEL, TINY_TRAIN, None))[0]

    plain = build()
    with torch.device("meta"):  # what Compute.active does with torch.device(...) on a GPU
        under_accelerator = build()
        assert torch.empty(1).device.type == "meta"  # the context is live, yet the model was not built there
        torch.manual_seed(0)
        adapter = attach(build(), AdapterConfig(rank=2))
    assert all(p.device.type == "cpu" for p in under_accelerator.parameters())
    for (name, a), (_, b) in zip(plain.state_dict().items(), under_accelerator.state_dict().items()):
        assert torch.equal(a, b), name
    factors = [p for n, p in adapter.named_parameters() if "lora_A" in n]
    assert factors and all(p.device.type == "cpu" and float(p.detach().abs().sum()) > 0 for p in factors)
    key = model_key(tiny_ws, None, TINY_MODEL, TINY_TRAIN, None)
    with Compute(device="cuda:0").active():  # no tensor is made: the key of a float32 model omits the device
        assert model_key(tiny_ws, None, TINY_MODEL, TINY_TRAIN, None) == key
