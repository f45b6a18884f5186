"""The evidence study's headline numbers: runs (or resumes) `cure study` and prints its tables.

Per method and strength: forgetting (JSD to retrain on forget samples, forget AUC),
utility (test AUC), membership-inference AUC and unlearning time, each as mean ± std
over the deletion draws; then the rate and level sections and transfer. Writes
benchmarks/results/study.json (summaries, not the per-cell rows: those are in the report).

    .venv/bin/python benchmarks/bench_study.py [--quick] [--seeds 0 1] [--training-seeds 2] [--transfer-data PATH]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from analysis.config import DataConfig
from analysis.model.train import train_recommender
from analysis.progress import StderrBars
from analysis.study import run_and_report
from analysis.study.grid import StudyConfig
from analysis.study.report import transfer_rows
from analysis.study.tables import NO_NOISE, ablation_rows, noise_rows
from analysis.workspace import open_workspace

OUT = Path(__file__).parent / "results" / "study.json"
COLUMNS = ("retrain_distance", "gap_closed", "jsd_ratio", "utility_cost", "jsd_forget", "auc_forget", "auc_test", "mia_auc", "seconds")


def pm(s: dict, key: str) -> str:
    return "-" if s.get(key) is None else f"{s[key]:.4f} ± {s.get(f'{key}_std', 0.0):.4f}"


def table(summaries: list[dict], by: tuple[str, ...]) -> str:
    lines = [" | ".join((*by, *COLUMNS)), " | ".join("---" for _ in (*by, *COLUMNS))]
    lines += [" | ".join((*(str(s[k]) for k in by), *(pm(s, c) for c in COLUMNS))) for s in summaries]
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join([" | ".join(keys), " | ".join("---" for _ in keys),
                      *(" | ".join(fmt(r.get(k)) for k in keys) for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--transfer-data", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="deletion draws")
    parser.add_argument("--training-seeds", type=int, default=None, help="seeds per original and retrain")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON summary goes")
    args = parser.parse_args()
    bars = StderrBars()
    ws = open_workspace(progress=bars)
    other = open_workspace(DataConfig(source=args.transfer_data), progress=bars) if args.transfer_data else None
    original = train_recommender(ws, progress=bars)
    config = StudyConfig.quick() if args.quick else StudyConfig()
    if args.seeds:
        config = replace(config, seeds=tuple(args.seeds))
    if args.training_seeds:
        config = replace(config, training_seeds=args.training_seeds)
    path, result = run_and_report(ws, original, config, bars, other)
    report = json.loads((path / "study.json").read_text())
    first = next(s for s in result.pareto if s["method"] == "cure")
    print(f"report: {path / 'report.html'}  ({len(result.rows)} cells, seeds {list(config.seeds)}, "
          f"{config.training_seeds} training seed(s))")
    print(f"wall time: {report['meta']['wall_seconds']:.0f} s ({report['meta']['wall_seconds'] / 60:.1f} min); "
          f"unlearning and retrains inside it: {report['meta']['unlearning_and_retrain_seconds'] or 0:.0f} s")
    print("\nOriginal model (doing nothing): "
          + ", ".join(f"{m} {first[f'original_{m}']:.4f}" for m in ("jsd_forget", "auc_forget", "mia_auc")))
    print("\n## Headline: each method at the strength chosen on validation (request " + config.request + ")\n"
          + table(result.headline, ("method", "lr")))
    print("\n## Pareto (request " + config.request + ")\n" + table(result.pareto, ("method", "lr")))
    print("\n## Deletion rates\n" + table(result.rates, ("request", "method")))
    print("\n## Levels\n" + table(result.levels, ("request", "method")))
    print("\n## Reproducibility\n" + json.dumps(result.reproducibility.deletion_draws))
    arms, diffs = ablation_rows(result)
    print("\n## Ablation (every arm on NPO, each at its rule-chosen strength)\n" + markdown(arms) + "\n\n"
          + markdown(diffs))
    draws, methods = noise_rows(result)
    print("\n## Training-seed noise\n" + (markdown(draws) + "\n\n" + markdown(methods) if draws else NO_NOISE))
    for row in transfer_rows(result):
        print("transfer:", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                            if k in ("groups from", "same groups", "cure with", "jsd_forget", "auc_forget")})
    args.out.parent.mkdir(exist_ok=True)
    stored = result.to_json()
    summary = {k: stored[k] for k in ("config", "default_lr", "compared_methods", "headline", "pareto", "rates",
                                      "levels", "reproducibility", "transfer", "ablation", "training_noise",
                                      "headline_with_training_noise")}
    args.out.write_text(json.dumps(summary | {"report": str(path), "meta": report["meta"]}, indent=1, default=str))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
