"""The study's newer sections as table rows, shared by the HTML report and the Evidence page (no math here:
the numbers are the study's own; this only names and formats them)."""
from __future__ import annotations

from .result import Row, StudyResult


def _interval(d: dict | None, digits: int = 4, signed: bool = True) -> str:
    """'mean [low, high]', or the mean with its count where there is no interval."""
    if not d or d.get("mean") is None:
        return "n/a"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    n = d.get("n", d.get("n_draws"))
    return fmt.format(d["mean"]) + (f" [{fmt.format(d['low'])}, {fmt.format(d['high'])}]" if d.get("low") is not None
                                    else f" (n = {n})")


ABLATION_COLUMNS = ["arm", "lr", "n_seeds", "retrain_distance", "retrain_distance_std", "gap_closed", "utility_cost",
                    "mia_never_seen_auc", "original_mia_never_seen_auc", "retrain_mia_never_seen_auc",
                    "auc_forget_unseen", "chosen_by"]


def ablation_rows(result: StudyResult) -> tuple[list[Row], list[Row]]:
    """The arms at the rule's strengths, and CURE minus each arm with its interval (both empty for reports
    written before the arms were)."""
    ab = result.ablation
    diffs = [{"comparison": f"cure minus {arm}", **{k: _interval(v) for k, v in d.items()}}
             for arm, d in ab.cure_minus.items()]
    return [{k: a.get(k) for k in ABLATION_COLUMNS} for a in ab.arms], diffs


def noise_rows(result: StudyResult) -> tuple[list[Row], list[Row]]:
    """Per deletion draw, the gap under both noises and the noise floor; and the compared methods over (draw,
    training seed) pairs. Both empty when the study trained one seed."""
    noise = result.training_noise
    if not noise:
        return [], []
    draws = [{"draw": d.draw, "gap interval (both noises)": "n/a" if d.low is None else f"[{d.low:.4f}, {d.high:.4f}]",
              "measurable": d.measurable, "original spread": round(d.original_spread, 4),
              "retrain spread": round(d.retrain_spread, 4),
              "retrain with another seed, distance": None if d.retrain_seed_distance is None
              else round(d.retrain_seed_distance, 3)} for d in noise.draws]
    methods = [{"method": h["method"], "lr": h["lr"], "pairs": h["pairs"],
                "retrain_distance": _interval(h["retrain_distance"], 3, False),
                "gap_closed": _interval(h["gap_closed"], 3, False), "utility_cost": _interval(h["utility_cost"]),
                "matched attack": _interval(h["mia_never_seen_auc"], 3, False)}
               for h in result.headline_with_training_noise]
    return draws, methods


ABLATION_NOTE = ("Every arm descends NPO, so only the update rule differs: uniform NPO, NPO with PCGrad's "
                 "projection, NPO on SalUn's salient weights, CURE, and CURE with random groups (its groups shuffled "
                 "within each node kind, same sizes). Each arm at the strength the retrain-free rule chose for it; "
                 "differences paired by deletion draw (95% bootstrap interval from 3 draws on). Negative distance: "
                 "CURE nearer the retrain.")
NOISE_NOTE = ("The original and each draw's retrain trained under several seeds. The gap's interval is the envelope "
              "of the forget-sample bootstrap over every pairing of an original seed with a retrain seed; "
              "'measurable' uses it. A retrain with another seed, scored as a run against the own retrain, is the "
              "noise floor of retrain distance: no method can be told from the retrain below it.")
NO_NOISE = ("Not measured: this study trained one seed (cure study --training-seeds 2 trains the original and every "
            "retrain under two).")
