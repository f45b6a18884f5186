"""The `cure` command's options: the parser, and the checks every value passes before any work starts."""
from __future__ import annotations

import argparse
import math

from ..config import TrainConfig
from ..errors import SettingsError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="local GroupLens folder or ratings/items CSV folder "
                   "(default: MovieLens-100K, fetched once into cache/data)")
    p.add_argument("--history", type=int, default=10, help="rated items shown before the target (H)")
    p.add_argument("--cache", default=None, help="cache folder (default: $CURE_CACHE or ./cache)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of every model (non-float32 results are cached separately)")
    p.add_argument("--eval-batch", type=int, default=None, help="prompts per forward pass when scoring and "
                   "tracing (bounds memory; default 512 scoring, 256 tracing)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forget", default=None, help="deletion request, e.g. users:0.1, users:12,40, "
                   "interactions:0.05, genre:Horror")
    p.add_argument("--forget-seed", type=int, default=0, help="seed that draws a fractional forget set")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--backbone", default=None, help="local Hugging Face causal LM folder to fine-tune")
    p.add_argument("--train-batch", type=int, default=TrainConfig.batch_size, help="training sequences per step")
    _adapter_args(p)


def _adapter_args(p: argparse.ArgumentParser, unlearning: bool = False) -> None:
    from ..model.adapters import AdapterConfig as A

    also = "; unlearning trains a fresh adapter of the same settings over it" if unlearning else ""
    p.add_argument("--adapter", default="full", choices=["full", "lora"],
                   help=f"how a --backbone is fine-tuned: all weights, or a LoRA adapter (peft){also}")
    p.add_argument("--lora-rank", type=int, default=None, help=f"LoRA rank (default {A.rank}; with --adapter lora)")
    p.add_argument("--lora-alpha", type=float, default=None,
                   help=f"LoRA alpha, the update's scale is alpha / rank (default {A.alpha:g}; with --adapter lora)")


def adapter_option(args):
    from ..model.adapters import from_options

    return from_options(getattr(args, "adapter", "full"), getattr(args, "lora_rank", None),
                        getattr(args, "lora_alpha", None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cure", description="CURE Explorer: circuit-aware unlearning for "
                                     "LLM recommenders")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="obtain the data and summarise it")
    _common(p)
    p = sub.add_parser("train", help="train (or load) a recommender; with --forget, the exact retrain")
    _common(p)
    _model_args(p)
    p = sub.add_parser("evaluate", help="metrics of a model next to the user+item bias baseline")
    _common(p)
    _model_args(p)
    p.add_argument("--model", default=None, help="saved model folder (default: the model the options describe)")
    p = sub.add_parser("rank", help="a user's top-k unrated items")
    _common(p)
    _model_args(p)
    p.add_argument("--model", default=None)
    p.add_argument("--user", type=int, required=True)
    p.add_argument("--k", type=int, default=10)
    p = sub.add_parser("circuits", help="circuits of the original model for a deletion request: forget, "
                       "retain and shared modules")
    _common(p)
    _circuit_args(p)
    p.add_argument("--null", action="store_true", help="also run the null request (forget prompts drawn from the "
                   "retained population): its forget-specific nodes are false positives")
    p = sub.add_parser("conflict", help="per-module gradient conflict cos(g_forget, g_retain) of the original model")
    _common(p)
    _original_args(p)
    p = sub.add_parser("unlearn", help="unlearn a deletion request with one method; compared with the retrain")
    _common(p)
    _circuit_args(p, method_flag="--circuit-method")
    _unlearn_args(p)
    p = sub.add_parser("warm", help="prepare a request for the app (default: the app's): the retrain, its "
                       "circuits and groups, the original's and the retrain's scored views")
    _common(p)
    p.add_argument("--forget", default=None, help="deletion request (default: the app's default request)")
    p.add_argument("--forget-seed", type=int, default=0)
    p = sub.add_parser("study", help="the evidence study: Pareto, deletion rates, levels, reproducibility, "
                       "privacy; writes an HTML/CSV/JSON report under cache/reports/ (resumable)")
    _common(p)
    p.add_argument("--quick", action="store_true", help="1 seed and fewer cells (~15 min on 2 cores)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="deletion draws (default 0 1 2)")
    p.add_argument("--training-seeds", type=int, default=None, help="train the original and each retrain under "
                   "this many seeds: intervals carry training noise (default 2; --quick: 1)")
    p.add_argument("--transfer-data", default=None, help="a second dataset (latest-small, or a folder): groups "
                   "found on a same-recipe model trained there drive CURE here")
    p.add_argument("--model", default=None, help="saved model folder (default: the default trained model)")
    p.add_argument("--seed", type=int, default=0, help="training seed of the default model")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--backbone", default=None)
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="where cells run: here, one after "
                   "another, or as Ray tasks (the cache must be on storage every Ray node mounts at the same path)")
    p.add_argument("--address", default=None, help="--executor ray: the cluster to join (auto, ray://host:10001); "
                   "default: start a local instance")
    p.add_argument("--cpus-per-cell", type=int, default=1, help="--executor ray: CPUs each cell declares")
    return parser


def _original_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forget", required=True, help="deletion request, e.g. users:0.1 (see `cure train`)")
    p.add_argument("--forget-seed", type=int, default=0)
    p.add_argument("--model", default=None, help="saved model folder (default: the default trained model)")
    p.add_argument("--seed", type=int, default=0, help="training seed of the default model")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--backbone", default=None)
    p.add_argument("--train-batch", type=int, default=TrainConfig.batch_size, help="training sequences per step")
    _adapter_args(p, unlearning=True)


def _unlearn_args(p: argparse.ArgumentParser) -> None:
    from ..unlearn.methods import RetainSpecific, UnlearningMethod
    from ..unlearn.registry import OBJECTIVES
    from ..unlearn.run import OPTIMIZERS, STOPS, UnlearnConfig as U

    p.add_argument("--method", dest="unlearn_method", required=True, choices=[m.value for m in UnlearningMethod])
    p.add_argument("--modules", default="", help="selective: modules to update, e.g. a0.h1,m2")
    p.add_argument("--unlearn-epochs", type=float, default=U.epochs, help="budget: passes over the forget set")
    p.add_argument("--steps", type=int, default=None, help="an explicit step count instead of --unlearn-epochs")
    p.add_argument("--lr", type=float, default=U.lr)
    p.add_argument("--optimizer", default=U.optimizer, choices=list(OPTIMIZERS))
    p.add_argument("--stop", default=U.stop, choices=list(STOPS),
                   help="auto: stop once the forgotten users are indistinguishable from never-seen users on the "
                        "validation-period attack (checked every 10 steps); loss: once the forget samples' loss "
                        "reaches the original's held-out loss")
    p.add_argument("--saliency", type=float, default=U.saliency, help="salun: share of parameter elements updated")
    p.add_argument("--objective", default=None, choices=list(OBJECTIVES),
                   help="the forget objective (default: the method's own; cure and selective: npo)")
    p.add_argument("--batch-size", type=int, default=U.batch_size)
    p.add_argument("--retain-weight", type=float, default=U.retain_weight)
    p.add_argument("--retain-specific", default=U.retain_specific.value, choices=[r.value for r in RetainSpecific])
    p.add_argument("--unlearn-seed", type=int, default=U.seed)
    p.add_argument("--strength", default="fixed", choices=["fixed", "auto"],
                   help="auto: run --strengths first and keep the weakest at which the forgotten users are "
                        "indistinguishable from never-seen users (validation period; never reads the retrain or "
                        "the test set), then run that one; fixed: --lr")
    p.add_argument("--strengths", default="1e-4,3e-4,1e-3", help="the learning rates --strength auto chooses from")
    p.add_argument("--random-groups", type=int, default=None, metavar="SEED",
                   help="cure only, an ablation: its groups shuffled within each node kind (same sizes)")


def _circuit_args(p: argparse.ArgumentParser, method_flag: str = "--method") -> None:
    from ..circuits.attribution import AttributionMethod
    from ..circuits.corrupt import Corruption
    from ..circuits.discover import CircuitSettings as S
    from ..circuits.groups import GroupThresholds as G

    _original_args(p)
    p.add_argument(method_flag, dest="method", default=S.method.value, choices=[m.value for m in AttributionMethod],
                   help="circuit attribution method")
    p.add_argument("--n-prompts", type=int, default=S.n_prompts, help="prompts per side (forget, retain)")
    p.add_argument("--corruption", default=S.corruption.value, choices=[c.value for c in Corruption])
    p.add_argument("--ig-steps", type=int, default=S.ig_steps)
    p.add_argument("--prompt-seed", type=int, default=S.seed, help="seed of prompt sampling and corruption")
    p.add_argument("--circuit-batch", type=int, default=S.batch_size, help="prompts per attribution batch "
                   "(bounds memory)")
    p.add_argument("--stability-seeds", type=int, default=S.stability_seeds)
    p.add_argument("--retain-samples", type=int, default=S.retain_samples, help="stability over retain samples")
    p.add_argument("--input-steps", type=int, default=S.input_steps, help="IG steps of the whole-request role and "
                   "item-row scores (1: the midpoint gradient)")
    p.add_argument("--request-samples", type=int, default=None, help="score roles and item rows on at most this "
                   "many seeded prompts per side instead of the whole request (large models)")
    p.add_argument("--patch-check", type=int, default=None, help="check attribution against exact patching on this "
                   "many seeded heads and MLPs per side instead of every one (large models)")
    p.add_argument("--targets", default=S.targets, choices=["auto", "replace", "keep"], help="replace the target "
                   "item in the counterfactual too, so its row is scored (auto: genre requests)")
    p.add_argument("--fdr", type=float, default=G.fdr, help="Benjamini-Hochberg level over the nodes tested")
    p.add_argument("--min-users", type=int, default=G.min_users, help="an item row is tested on a side only when "
                   "that many of its users' prompts hold it")
    p.add_argument("--target", type=float, default=S.target, help="recovery the returned circuit must reach")
    p.add_argument("--top-n", type=int, default=None, help="return the top-n edges instead of a target")
    p.add_argument("--granularity", default=S.granularity, choices=["modules", "neurons"],
                   help="neurons: every MLP hidden unit is a node too (EAP / EAP-IG)")
    p.add_argument("--group-rule", default=G.rule.value, choices=["specificity", "threshold"],
                   help="specificity: bootstrap CI of log(I_forget/I_retain) against tau; threshold: the old rule")
    p.add_argument("--tau", type=float, default=G.tau, help="specificity rule: ratio the CI must clear")
    p.add_argument("--floor", type=float, default=G.floor, help="specificity rule: minimum importance "
                   "(x a uniform share of the node's family)")
    p.add_argument("--forget-threshold", type=float, default=G.forget, help="threshold rule: importance "
                   "(x mean node) to count as important on forget prompts")
    p.add_argument("--retain-threshold", type=float, default=G.retain)


def strengths_option(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise SettingsError(f"--strengths {text!r}: learning rates separated by commas, e.g. 1e-4,3e-4") from None
    if not values or not all(0 < v < 1 for v in values):
        raise SettingsError(f"--strengths {text!r}: each a learning rate in (0, 1)")
    return values


# Numeric options and the range they must be in: checked before any work starts, so a bad value is
# one line naming the option, never a traceback from deep inside (e.g. `rank --k 0` once was).
_RANGES: dict[str, tuple[str, object]] = {
    "history": ("at least 1", lambda v: v >= 1), "k": ("at least 1", lambda v: v >= 1),
    "epochs": ("at least 1", lambda v: v >= 1), "steps": ("at least 1", lambda v: v >= 1),
    "batch_size": ("at least 1", lambda v: v >= 1), "n_prompts": ("at least 1", lambda v: v >= 1),
    "ig_steps": ("at least 1", lambda v: v >= 1), "stability_seeds": ("at least 1", lambda v: v >= 1),
    "retain_samples": ("at least 1", lambda v: v >= 1), "input_steps": ("at least 1", lambda v: v >= 1),
    "request_samples": ("at least 1", lambda v: v >= 1), "patch_check": ("at least 1", lambda v: v >= 1),
    "min_users": ("at least 1", lambda v: v >= 1), "fdr": ("in (0, 1)", lambda v: 0 < v < 1),
    "top_n": ("at least 1", lambda v: v >= 1), "lora_rank": ("at least 1", lambda v: v >= 1),
    "lora_alpha": ("a positive number", lambda v: 0 < v < math.inf), "eval_batch": ("at least 1", lambda v: v >= 1),
    "train_batch": ("at least 1", lambda v: v >= 1), "circuit_batch": ("at least 1", lambda v: v >= 1),
    "lr": ("a positive number", lambda v: 0 < v < math.inf),
    "unlearn_epochs": ("a positive number", lambda v: 0 < v < math.inf),
    "saliency": ("in (0, 1]", lambda v: 0 < v <= 1), "target": ("in (0, 1]", lambda v: 0 < v <= 1),
    "retain_weight": ("a number >= 0", lambda v: 0 <= v < math.inf), "tau": ("a number >= 0", lambda v: 0 <= v < math.inf),
    "floor": ("a number >= 0", lambda v: 0 <= v < math.inf),
    "forget_threshold": ("a number >= 0", lambda v: 0 <= v < math.inf),
    "retain_threshold": ("a number >= 0", lambda v: 0 <= v < math.inf),
}
_SEEDS = ("seed", "forget_seed", "prompt_seed", "unlearn_seed", "user")


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Raise SettingsError (one line naming the option) for an out-of-range value or a bad --forget."""
    from ..data.forget import parse_forget_spec

    for name, (rule, ok) in _RANGES.items():
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            raise SettingsError(f"--{name.replace('_', '-')} must be {rule}, got {value}")
    for name in _SEEDS:  # numpy seeds and ids are non-negative and fit in 63 bits
        value = getattr(args, name, None)
        if value is not None and not 0 <= value < 2**63:
            raise SettingsError(f"--{name.replace('_', '-')} must be between 0 and 2**63-1, got {value}")
    for value in getattr(args, "seeds", None) or ():
        if not 0 <= value < 2**63:
            raise SettingsError(f"--seeds must be between 0 and 2**63-1, got {value}")
    if getattr(args, "forget", None):  # parsed once, here: every handler gets the ForgetSpec
        args.forget = parse_forget_spec(args.forget)
    if adapter_option(args) is not None and not args.backbone and not getattr(args, "model", None):
        raise SettingsError("--adapter lora needs a pretrained --backbone (or a saved --model trained from one); "
                            "the from-scratch recommender is always trained fully")
    return args
