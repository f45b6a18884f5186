"""`cure`: the command line. With --json, one JSON object on stdout; progress always on stderr."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import CureError
from ..progress import StderrBars
from .commands import dispatch, workspace_of
from .options import build_parser, check_args


def _staged(args, ws):
    """The command's stages on stderr (the app shows the same plan), or plain bars where it has none."""
    from ..progress import TIMINGS, StagedProgress, StderrStages
    from ..unlearn.registry import spec_of

    plan = spec_of(args.unlearn_method).plan if args.command == "unlearn" else \
        {"circuits": "circuits", "study": "study", "warm": "warm", "train": "train"}.get(args.command)
    return StagedProgress(plan, StderrStages(), costs=ws.root / TIMINGS) if plan else None


def run(args: argparse.Namespace) -> dict:
    from ..compute import resolve

    check_args(args)
    compute = resolve(args.device, args.dtype, args.eval_batch)  # before any work: a bad --device is one line
    with compute.active():
        ws = workspace_of(args, StderrBars())
        staged = _staged(args, ws)
        result = dispatch(args, ws, staged or StderrBars())
        if staged is not None:
            staged.finish()
    return result


def _print_human(result: dict) -> None:
    if "report" in result:
        print(result["report"])
        return
    if "items" in result:
        for row in result["items"]:
            print(f"{row['rank']:>3}  {row['p_like']:.3f}  {row['title']}")
        return
    print(json.dumps(result, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except CureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the build in progress removed its temp folder; the queue moves on
        print("cancelled: nothing partial was stored", file=sys.stderr)
        return 130
    except Exception as exc:  # a batch that does not fit the accelerator: name the settings that bound memory
        from ..compute import is_out_of_memory, out_of_memory_message

        if not is_out_of_memory(exc):
            raise
        print(f"error: {out_of_memory_message(exc)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _print_human(result)
    return 0
