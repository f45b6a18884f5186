"""Property-based fuzzing of the entry points a user types into: forget specs, CLI arguments, data files.

Every generated input must end in a valid result or a CureError (one clean line), never another
exception or a hang. 1,000 examples per entry point (the issue's floor); each is cheap.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.cli import build_parser, check_args
from analysis.data.forget import parse_forget_spec
from analysis.data.loaders import load_csv, load_dataset
from analysis.errors import CureError

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

ints = st.one_of(st.integers(-3, 3), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2**63, 10**30]))
numbers = st.one_of(ints.map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["nan", "inf", "-inf", "1e999", "0.5", "", " ", "abc", "0x10", "1_000"]))
words = st.text(st.characters(codec="utf-8"), max_size=12)

specs = st.one_of(
    words,
    st.tuples(st.sampled_from(["users", "interactions", "genre", "USERS", " users ", "user", ""]),
              st.sampled_from([":", "", "::"]),
              st.one_of(numbers, words, st.lists(ints.map(str), max_size=5).map(",".join),
                        st.tuples(words, st.lists(ints.map(str), max_size=3).map(",".join))
                        .map(lambda t: f"{t[0]}@users:{t[1]}"))).map("".join),
)


@FUZZ
@given(specs)
def test_forget_specs_parse_or_fail_cleanly(spec):
    try:
        parsed = parse_forget_spec(spec)
    except CureError:
        return
    assert parsed.level in ("users", "interactions", "genre")


@pytest.fixture(scope="module")
def tiny_ws_module(tiny_data, tmp_path_factory):
    from analysis.data.samples import build_interactions
    from analysis.workspace import Workspace

    from analysis.config import DataConfig

    return Workspace(tiny_data, build_interactions(tiny_data, history=3, fraction=0.2), DataConfig(history=3),
                     tmp_path_factory.mktemp("fuzz-cache"))


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(specs, st.integers(0, 2**32))
def test_forget_sets_on_real_data_are_valid_or_refused(tiny_ws_module, spec, seed):
    """Unknown users, unknown genres, empty and total forget sets: all CureErrors; else a non-empty mask."""
    try:
        forget = tiny_ws_module.forget_set(spec, seed=seed)
    except CureError:
        return
    assert 0 < forget.mask.sum() < len(forget.mask)
    assert len(forget.forget_samples) > 0


OPTIONS = ["--k", "--user", "--history", "--epochs", "--steps", "--lr", "--batch-size", "--n-prompts",
           "--ig-steps", "--saliency", "--target", "--top-n", "--tau", "--floor", "--retain-weight", "--seed",
           "--forget-seed", "--unlearn-epochs", "--stability-seeds", "--forget", "--method", "--objective",
           "--seeds", "--granularity", "--json", "--quick", "--bogus", "--adapter", "--lora-rank", "--lora-alpha",
           "--backbone"]
COMMANDS = ["prepare", "train", "evaluate", "rank", "circuits", "conflict", "unlearn", "warm", "study", "nope", ""]


@FUZZ
@given(st.sampled_from(COMMANDS),
       st.lists(st.tuples(st.sampled_from(OPTIONS),
                          st.one_of(numbers, specs, st.sampled_from(["cure", "ga", "npo", "lora", "full"]))),
                max_size=5))
def test_cli_arguments_parse_or_fail_cleanly(command, pairs):
    """argparse's own usage error (exit 2, no traceback) or our one-line SettingsError, or valid settings."""
    argv = [command] + [tok for opt, value in pairs for tok in (opt, value)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2 and "Traceback" not in err.getvalue()
        return
    try:
        check_args(args)
    except CureError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(args, argparse.Namespace)


def test_cli_rejects_the_reported_cases_with_one_line(capsys):
    from analysis.cli import main

    for argv in (["rank", "--user", "1", "--k", "0"], ["unlearn", "--forget", "users:0.1", "--method", "cure",
                                                       "--lr", "nan"], ["train", "--forget", "users:abc"],
                 ["circuits", "--forget", "users:0.1", "--n-prompts", "0"], ["rank", "--user", "-1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


RATINGS_HEADER = "user_id,item_id,rating,timestamp\n"
ITEMS_OK = "item_id,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,Heat (1995),Action\n"

rows = st.lists(st.tuples(ints, ints, st.one_of(st.floats(allow_nan=True, allow_infinity=True), ints), ints),
                max_size=8).map(lambda rs: RATINGS_HEADER + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rs))
files = st.one_of(
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
    rows.map(lambda t: ("rows", t.encode())),
    rows.map(lambda t: ("truncated", t.encode()[: max(0, len(t) - 7)])),
    rows.map(lambda t: ("latin-1", (t + "1,1,4,0\n").encode("utf-16"))),
    rows.map(lambda t: ("duplicates", (t + "1,1,4,5\n1,1,4,5\n" * 3).encode())),
)


@FUZZ
@given(files, st.sampled_from(["ratings", "items"]))
def test_data_files_load_or_fail_cleanly(case, which):
    """Random bytes, truncated lines, a wrong encoding, huge ids, duplicate rows: RatingsData or DataError."""
    _, blob = case
    folder = Path(tempfile.mkdtemp(prefix="fuzz-data-"))
    try:
        ratings = blob if which == "ratings" else b"user_id,item_id,rating,timestamp\n1,1,4,0\n1,2,3,1\n"
        items = blob if which == "items" else ITEMS_OK.encode()
        (folder / "ratings.csv").write_bytes(ratings)
        (folder / "movies.csv").write_bytes(items)
        try:
            data = load_csv(folder / "ratings.csv", folder / "movies.csv")
        except CureError as exc:
            assert str(exc)
            return
        assert len(data.ratings) > 0 and data.ratings["rating"].notna().all()
        try:  # the folder route reaches the same loader
            load_dataset(folder)
        except CureError:
            pass
    finally:
        shutil.rmtree(folder, ignore_errors=True)
