"""Small datasets for tests and benchmarks: the first users of a RatingsData, written as a GroupLens folder."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from analysis.data.schema import RatingsData


def subset(data: RatingsData, n_users: int) -> RatingsData:
    users = sorted(data.ratings["user_id"].unique())[:n_users]
    ratings = data.ratings[data.ratings["user_id"].isin(users)].reset_index(drop=True)
    return replace(data, ratings=ratings, users=data.users[data.users["user_id"].isin(users)].reset_index(drop=True))


def write_ml100k_folder(data, folder: Path) -> Path:
    """Write a RatingsData in the GroupLens ml-100k layout (u.data, u.item, u.user)."""
    folder.mkdir(parents=True)
    r = data.ratings
    (folder / "u.data").write_text("".join(
        f"{u}\t{i}\t{int(x)}\t{t}\n" for u, i, x, t in zip(r.user_id, r.item_id, r.rating, r.timestamp)))
    genres = list(data.genres)
    lines = []
    for item_id, title, gs in zip(data.items.item_id, data.items.title, data.items.genres):
        flags = "|".join("1" if g in gs else "0" for g in genres)
        lines.append(f"{item_id}|{title}|01-Jan-1995||http://x|{flags}\n")
    (folder / "u.item").write_text("".join(lines), encoding="latin-1", errors="replace")
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(genres)))
    ages = {"under18": 15, "18-24": 20, "25-34": 30, "35-44": 40, "45-49": 47, "50-55": 52, "56+": 60}
    (folder / "u.user").write_text("".join(
        f"{u}|{ages[a]}|{g}|{o}|00000\n"
        for u, a, g, o in zip(data.users.user_id, data.users.age_group, data.users.gender, data.users.occupation)))
    return folder
