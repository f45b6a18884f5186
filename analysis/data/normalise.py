"""Reading and checking tables: every layout's files pass through here on their way to one `RatingsData`.

Each problem raises DataError naming the file (and the line, for text files): a missing column, a
value that is not a number, an id a ratings file refers to that its items or users file lacks.
Split from loaders.py (which says which files each layout has and which layout a folder holds)
so that latest_small.py can use the normaliser while loaders.py dispatches to latest_small.py:
the two modules used to import each other. The `_`-names are shared inside analysis/data only.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from ..errors import DataError
from .schema import RatingsData, age_group

NO_GENRES = "(no genres listed)"  # MovieLens' placeholder in movies.csv, not a genre
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
