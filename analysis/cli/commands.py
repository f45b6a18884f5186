"""What each `cure` command does with its checked options: one handler per command, each returning the JSON
object the command prints."""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..config import DataConfig, ModelConfig, TrainConfig
from ..errors import SettingsError
from .options import adapter_option, strengths_option


def _study(args, ws, progress) -> dict:
    from dataclasses import replace

    from ..study import run_and_report
    from ..study.grid import StudyConfig

    config = StudyConfig.quick() if args.quick else StudyConfig()
    if args.seeds:
        config = replace(config, seeds=tuple(args.seeds))
    if args.training_seeds is not None:
        if args.training_seeds < 1:
            raise SettingsError("--training-seeds must be at least 1")
        config = replace(config, training_seeds=args.training_seeds)
    transfer = None
    if args.transfer_data:
        from ..workspace import open_workspace

        transfer = open_workspace(DataConfig(source=args.transfer_data, history=args.history), root=args.cache,
                                  progress=progress)
    from ..study.executors import make_executor

    executor = make_executor(args.executor, args.address, cpus_per_cell=args.cpus_per_cell)
    path, result = run_and_report(ws, _original(argparse.Namespace(**{**vars(args), "forget": None}), ws, progress),
                                  config, progress, transfer, executor)
    j = result.to_json()
    return {"report": str(path / "report.html"), "folder": str(path),
            **{k: j[k] for k in ("seconds", "compared_methods", "headline", "training_noise", "ablation", "pareto",
                                 "reproducibility", "transfer")}}


def _circuit_settings(args):
    from ..circuits.discover import CircuitSettings
    from ..circuits.groups import GroupThresholds

    settings = CircuitSettings(method=args.method, n_prompts=args.n_prompts, corruption=args.corruption,
                               ig_steps=args.ig_steps, seed=args.prompt_seed, stability_seeds=args.stability_seeds,
                               batch_size=args.circuit_batch, retain_samples=args.retain_samples,
                               input_steps=args.input_steps, targets=args.targets,
                               request_samples=args.request_samples, patch_check=args.patch_check,
                               target=args.target, top_n=args.top_n, granularity=args.granularity)
    return settings, GroupThresholds(args.forget_threshold, args.retain_threshold, rule=args.group_rule,
                                     tau=args.tau, floor=args.floor, fdr=args.fdr, min_users=args.min_users)


def _original(args, ws, progress):
    """The model a deletion request is made against (never the retrain: --forget names the request)."""
    return _model(argparse.Namespace(**{**vars(args), "forget": None}), ws, progress)


def _circuits(args, ws, progress) -> dict:
    import time

    from ..circuits.discover import discover_circuits
    from ..circuits.groups import Group

    start = time.perf_counter()
    settings, thresholds = _circuit_settings(args)
    forget = ws.forget_set(args.forget, seed=args.forget_seed)
    rec = _original(args, ws, progress)
    result = discover_circuits(ws, rec, forget, settings, thresholds, progress).to_json()
    if args.null:  # the same pipeline on a request drawn from the retained population: the rule's false positives
        from dataclasses import replace

        from ..circuits.lean import discover_groups

        null = discover_groups(ws, rec, forget, replace(settings, null=True), thresholds, progress).node_groups
        result["null"] = {"groups": null.sizes(), "groups_by_kind": null.sizes_by_kind(),
                          "tested": null.decisions().tested, "fdr": thresholds.fdr,
                          "top_forget_specific": [v.to_json() for v in null.top(Group.FORGET)]}
    for bulky in ("attribution", "draws", "node_scores"):  # raw scores stay in the cached folder (`path`)
        result.pop(bulky)
    result["coverage"].pop("blocks", None)
    result["compute_seconds"] = result.pop("seconds")
    result["seconds"] = time.perf_counter() - start
    result["model_dir"] = str(rec.path)
    return result


def _warm(args, ws, progress) -> dict:
    """What the app's first visit would otherwise compute: so after `make app`, the Circuits page and a
    CURE run of the default request only read the cache (the run's own steps excepted)."""
    from ..circuits.discover import CircuitSettings, discover_circuits
    from ..circuits.groups import GroupThresholds
    from ..circuits.lean import discover_groups
    from ..config import DEFAULT_REQUEST
    from ..model.train import train_recommender
    from ..unlearn.compare import reference_view
    from ..unlearn.lab import retrain_for

    rec = train_recommender(ws, None, ModelConfig(), TrainConfig(), progress=progress)
    forget = ws.forget_set(args.forget or DEFAULT_REQUEST, seed=args.forget_seed)
    retrain, _ = retrain_for(ws, rec, forget, progress)
    settings = CircuitSettings.from_env()  # the app's own
    circuits = discover_circuits(ws, rec, forget, settings, GroupThresholds(), progress)
    discover_groups(ws, rec, forget, settings, GroupThresholds(), progress)  # reuses the full result
    for model in (rec, retrain):
        reference_view(model, ws, forget, progress)
    return {"forget": asdict(forget.summary()), "model_dir": str(rec.path), "retrain_dir": str(retrain.path),
            "circuits": str(circuits.path), "groups": circuits.node_groups.sizes()}


def _conflict(args, ws, progress) -> dict:
    from ..unlearn.start import conflict_of

    rec = _original(args, ws, progress)
    forget = ws.forget_set(args.forget, seed=args.forget_seed)
    cmap = conflict_of(ws, rec, forget, adapter=adapter_option(args))
    n_layers, n_heads = rec.model.config.num_hidden_layers, rec.model.config.num_attention_heads
    return {"forget": asdict(forget.summary()), "model_dir": str(rec.path), **cmap.to_json(),
            "heatmap": {"rows": [f"layer {l}" for l in range(n_layers)],
                        "columns": [f"h{h}" for h in range(n_heads)] + ["mlp"],
                        "cos": cmap.heatmap(n_layers, n_heads)}}


def _unlearn(args, ws, progress) -> dict:
    from ..unlearn.lab import unlearn
    from ..unlearn.registry import spec_of
    from ..unlearn.run import UnlearnConfig

    spec = spec_of(args.unlearn_method)
    settings, thresholds = _circuit_settings(args)
    modules = tuple(m for m in args.modules.split(",") if m.strip())
    cfg = UnlearnConfig(method=args.unlearn_method, epochs=args.unlearn_epochs, steps=args.steps, lr=args.lr,
                        optimizer=args.optimizer, stop=args.stop, saliency=args.saliency, objective=args.objective,
                        batch_size=args.batch_size,
                        retain_weight=args.retain_weight, modules=modules, retain_specific=args.retain_specific,
                        seed=args.unlearn_seed, circuits=settings, thresholds=thresholds,
                        adapter=adapter_option(args) if "adapter" in spec.options else None,
                        random_groups=args.random_groups)
    forget = ws.forget_set(args.forget, seed=args.forget_seed)
    original = _original(args, ws, progress)
    choice = None
    if args.strength == "auto" and spec.steps:  # a strength is a step method's learning rate
        from dataclasses import replace

        from ..unlearn.strength import strength_sweep

        choice = strength_sweep(ws, original, forget, cfg, strengths_option(args.strengths), progress)
        cfg = replace(cfg, lr=choice.strength)
    run = unlearn(ws, original, forget, cfg, progress)
    out = {**run.to_json(), "run_dir": run.run_dir, "model_dir": run.model_dir}  # what the CLI prints
    return out if choice is None else {**out, "strength_choice": choice.to_json()}


def workspace_of(args, progress):
    from ..workspace import open_workspace

    return open_workspace(DataConfig(source=args.data, history=args.history), root=args.cache, progress=progress)


def _forget(args, ws):
    return ws.forget_set(args.forget, seed=args.forget_seed) if args.forget else None


def _model(args, ws, progress):
    from ..model.recommender import load_recommender
    from ..model.train import train_recommender

    if getattr(args, "model", None):
        return load_recommender(Path(args.model), ws.data)
    train_cfg = TrainConfig(epochs=args.epochs, seed=args.seed, batch_size=getattr(args, "train_batch", None)
                            or TrainConfig.batch_size)
    return train_recommender(ws, _forget(args, ws), ModelConfig(), train_cfg, backbone=args.backbone,
                             progress=progress, adapter=adapter_option(args))


def dispatch(args: argparse.Namespace, ws, progress) -> dict:
    if args.command == "prepare":
        return {"data": asdict(ws.data.summary()), "split": asdict(ws.interactions.summary()),
                "fingerprint": ws.fingerprint, "cache": str(ws.root)}
    if args.command in ("circuits", "conflict", "unlearn", "study", "warm"):
        return {"circuits": _circuits, "conflict": _conflict, "unlearn": _unlearn,
                "study": _study, "warm": _warm}[args.command](args, ws, progress)
    rec = _model(args, ws, progress)
    if args.command == "train":
        training = rec.meta["training"]
        return {"model_dir": str(rec.path), "train_seconds": training["train_seconds"],
                "tokens_per_second": training["tokens_per_second"], "peak_rss_mb": training["peak_rss_mb"],
                "best_epoch": training["best_epoch"], "forget": rec.meta["forget"], "metrics": rec.meta["metrics"]}
    if args.command == "evaluate":
        from ..model.evaluate import ModelEvaluation, baseline_metrics, evaluate_model

        forget = _forget(args, ws)
        stored = not args.model and "metrics" in rec.meta
        metrics = ModelEvaluation.of(rec) if stored else evaluate_model(rec, ws, forget, progress=progress)
        base = baseline_metrics(ws, forget)
        return {"model_dir": str(rec.path), "metrics": metrics.to_json(),
                "baselines": {"user_item_bias": base.test.to_json() | base.ranking.to_json()}}
    from ..recommend import top_k

    items = [asdict(r) for r in top_k(rec, ws, args.user, args.k)]
    return {"user": args.user, "model_dir": str(rec.path), "items": items}
