"""Deletion requests: parsing, selection and the retained training set (analysis/data/forget.py)."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.data.forget import ForgetSpec, parse_forget_spec, retained_training, select_forget_set
from analysis.data.samples import HISTORY, TEST, TRAIN, VALID, build_interactions
from analysis.errors import ForgetSpecError

TRAINING = (HISTORY, TRAIN)


def genre_items(data, genre: str) -> set[int]:
    items = data.items
    return set(items.loc[items["genres"].map(lambda gs: genre in gs), "item_id"].tolist())


def training_mask(inter) -> np.ndarray:
    return inter.frame["split"].isin(TRAINING).to_numpy()


def check_forget_set(fs) -> None:
    """Invariants every forget set must satisfy."""
    inter = fs.interactions
    f = inter.frame
    assert fs.mask.dtype == bool and len(fs.mask) == len(f)
    assert fs.mask.any()
    assert set(fs.forgotten["split"].unique()) <= set(TRAINING), "only training interactions are forgotten"
    assert len(fs.forget_samples) > 0
    assert (fs.forget_samples["split"] == TRAIN).all()
    assert fs.mask.sum() < training_mask(inter).sum()


def check_retained(inter, fs) -> None:
    kept = retained_training(inter, fs)
    forgotten = fs.forgotten
    assert set(kept.index).isdisjoint(forgotten.index), "a forgotten interaction is still retained"
    assert set(kept["split"].unique()) <= set(TRAINING), "valid/test rows must never be retained"
    training = inter.training
    assert set(kept.index) | set(forgotten.index) == set(training.index)
    assert len(kept) + len(forgotten) == len(training)
    # removed "everywhere": no (user, item) pair of the forget set remains, as label or history
    pairs = set(zip(forgotten["user_id"], forgotten["item_id"]))
    assert not pairs & set(zip(kept["user_id"], kept["item_id"]))


# ---------------------------------------------------------------- users


def test_users_fraction(ml100k_interactions):
    inter = ml100k_interactions
    fs = select_forget_set(inter, "users:0.1", seed=0)
    check_forget_set(fs)
    assert len(fs.users) == round(0.1 * 896) == 90  # of the 896 seen users: never-seen ones cannot be named
    assert not set(fs.users) & inter.never_seen_user_ids
    f = inter.frame
    expected = training_mask(inter) & f["user_id"].isin(fs.users).to_numpy()
    assert (fs.mask == expected).all(), "all training interactions of the chosen users, nothing else"
    # the chosen users keep their valid/test rows (they are never part of a forget set)
    assert (f[f["user_id"].isin(fs.users)]["split"].isin((VALID, TEST))).sum() > 0
    check_retained(inter, fs)
    assert fs.summary().users_touched == 90
    assert fs.key == {"spec": "users:0.1", "seed": 0}


def test_users_fraction_is_seeded(ml100k_interactions):
    a = select_forget_set(ml100k_interactions, "users:0.1", seed=0)
    b = select_forget_set(ml100k_interactions, "users:0.1", seed=0)
    c = select_forget_set(ml100k_interactions, "users:0.1", seed=1)
    assert a.users == b.users and (a.mask == b.mask).all()
    assert c.users != a.users
    assert len(c.users) == 90


def test_users_explicit(ml100k_interactions):
    inter = ml100k_interactions
    fs = select_forget_set(inter, "users:12,40,7")
    check_forget_set(fs)
    assert fs.users == (7, 12, 40)
    assert fs.spec == ForgetSpec("users", user_ids=(7, 12, 40))
    f = inter.frame
    expected = training_mask(inter) & f["user_id"].isin([7, 12, 40]).to_numpy()
    assert (fs.mask == expected).all()
    check_retained(inter, fs)
    # a single id is a user id, not a fraction
    one = select_forget_set(inter, "users:1")
    assert one.users == (1,)


# ---------------------------------------------------------------- interactions


def test_interactions_fraction(ml100k_interactions):
    inter = ml100k_interactions
    fs = select_forget_set(inter, "interactions:0.05", seed=0)
    check_forget_set(fs)
    n_training = int(training_mask(inter).sum())
    assert fs.mask.sum() == int(np.floor(0.05 * n_training + 0.5))
    check_retained(inter, fs)
    again = select_forget_set(inter, "interactions:0.05", seed=0)
    assert (again.mask == fs.mask).all()
    other = select_forget_set(inter, "interactions:0.05", seed=7)
    assert other.mask.sum() == fs.mask.sum()
    assert not (other.mask == fs.mask).all()
    # spread over history and train
    assert set(fs.forgotten["split"].unique()) == set(TRAINING)


# ---------------------------------------------------------------- genre


def test_genre(ml100k, ml100k_interactions):
    inter = ml100k_interactions
    fs = select_forget_set(inter, "genre:Horror")
    check_forget_set(fs)
    horror = genre_items(ml100k, "Horror")
    f = inter.frame
    training = training_mask(inter)
    assert set(fs.forgotten["item_id"]) <= horror
    assert (fs.mask == (training & f["item_id"].isin(horror).to_numpy())).all()
    # every training interaction with a Horror movie, none other
    assert fs.mask.sum() == (training & f["item_id"].isin(horror).to_numpy()).sum()
    assert not f[~fs.mask & training]["item_id"].isin(horror).any()
    check_retained(inter, fs)


def test_a_deterministic_request_has_one_forget_set_whatever_the_seed(ml100k_interactions):
    inter = ml100k_interactions
    for spec in ("genre:Horror", "users:12,40"):  # same set, so same key: one retrain and one run, not three
        assert select_forget_set(inter, spec, seed=3).key == select_forget_set(inter, spec, seed=0).key
    assert select_forget_set(inter, "users:0.1", seed=3).key != select_forget_set(inter, "users:0.1", seed=0).key


def test_genre_case_insensitive_for_chosen_users(ml100k, ml100k_interactions):
    inter = ml100k_interactions
    fs = select_forget_set(inter, "genre:horror@users:12,40")
    check_forget_set(fs)
    assert fs.spec.genre == "Horror"
    assert str(fs.spec) == "genre:Horror@users:12,40"
    assert set(fs.users) <= {12, 40}
    horror = genre_items(ml100k, "Horror")
    f = inter.frame
    expected = training_mask(inter) & f["item_id"].isin(horror).to_numpy() & f["user_id"].isin([12, 40]).to_numpy()
    assert (fs.mask == expected).all()
    full = select_forget_set(inter, "genre:HORROR")
    assert fs.mask.sum() < full.mask.sum()
    assert not (fs.mask & ~full.mask).any()
    check_retained(inter, fs)


def test_retained_without_forget_set_is_all_training(ml100k_interactions):
    kept = retained_training(ml100k_interactions, None)
    assert kept.index.equals(ml100k_interactions.training.index)


# ---------------------------------------------------------------- parsing and errors


@pytest.mark.parametrize("spec", ["", "   ", "hello", "users", "users:", "foo:0.1", "genre:", "interactions:",
                                  "users 0.1", ":0.1"])
def test_garbage_spec(spec):
    with pytest.raises(ForgetSpecError) as exc:
        parse_forget_spec(spec)
    msg = str(exc.value)
    assert "users:0.1" in msg and "genre:Horror" in msg, "the message shows the accepted forms"


@pytest.mark.parametrize("spec,fragment", [
    ("users:1.5", "between 0 and 1"),
    ("users:0.0", "between 0 and 1"),
    ("users:abc", "expected a fraction of users"),
    ("interactions:1", "between 0 and 1"),
    ("interactions:0", "between 0 and 1"),
    ("interactions:x", "not a fraction"),
    ("users:1,x", "integers"),
    ("users:,,", "no user ids"),
    ("genre:Horror@items:1", "users:"),
    ("genre:Horror@users:", "no user ids"),
])
def test_bad_spec_values(spec, fragment):
    with pytest.raises(ForgetSpecError, match=fragment) as exc:
        parse_forget_spec(spec)
    assert spec.split(":")[0] in str(exc.value)


def test_users_zero(ml100k_interactions):
    # "0" is read as user id 0 (ids are digits), which ML-100K does not have
    with pytest.raises(ForgetSpecError, match="0"):
        select_forget_set(ml100k_interactions, "users:0")


def test_unknown_user(ml100k_interactions):
    with pytest.raises(ForgetSpecError, match="99999"):
        select_forget_set(ml100k_interactions, "users:99999")
    with pytest.raises(ForgetSpecError, match="99999"):
        select_forget_set(ml100k_interactions, "users:12,99999")
    with pytest.raises(ForgetSpecError, match="99999"):
        select_forget_set(ml100k_interactions, "genre:Horror@users:99999")


def test_a_never_seen_user_cannot_be_forgotten(ml100k_interactions):
    held = min(ml100k_interactions.never_seen_user_ids)
    with pytest.raises(ForgetSpecError, match="never seen"):
        select_forget_set(ml100k_interactions, f"users:{held}")
    # a genre request never reaches their rows either: they are in no training split
    fs = select_forget_set(ml100k_interactions, "genre:Horror")
    assert not set(fs.users) & ml100k_interactions.never_seen_user_ids


def test_unknown_genre_lists_known(ml100k_interactions):
    with pytest.raises(ForgetSpecError) as exc:
        select_forget_set(ml100k_interactions, "genre:Polka")
    msg = str(exc.value)
    assert "Polka" in msg
    for g in ("Horror", "Drama", "Film-Noir", "Children's"):
        assert g in msg


def tiny_two_users(make_ratings_data, genres_by_item=None):
    rows = [(u, i, 4 if (u + i) % 2 else 2, 100 * u + i) for u in (1, 2) for i in range(1, 9)]
    return build_interactions(make_ratings_data(rows, item_genres=genres_by_item), history=2)


def test_selecting_every_user(make_ratings_data):
    inter = tiny_two_users(make_ratings_data)
    with pytest.raises(ForgetSpecError, match="every"):
        select_forget_set(inter, "users:1,2")
    with pytest.raises(ForgetSpecError, match="every"):
        select_forget_set(inter, "users:0.9")  # round(1.8) = 2 of 2 users
    assert select_forget_set(inter, "users:2").users == (2,)


def test_selecting_every_training_interaction(make_ratings_data):
    inter = tiny_two_users(make_ratings_data)  # every item is Drama
    with pytest.raises(ForgetSpecError, match="every training interaction"):
        select_forget_set(inter, "genre:Drama")
    with pytest.raises(ForgetSpecError, match="every training interaction"):
        select_forget_set(inter, "interactions:0.99")


def test_selecting_nothing(make_ratings_data):
    # user 1 rates only Drama; user 2 also rates Comedy (items 5..8, in history/train), so Comedy exists
    drama = [1, 2, 3, 4, 9, 10, 11, 12]
    rows = [(1, i, 4, i) for i in drama] + [(2, i, 4, 100 + i) for i in range(5, 13)]
    genres = {i: ("Drama",) for i in drama}
    genres.update({i: ("Comedy",) for i in range(5, 9)})
    genres[99] = ("Western",)  # a known genre nobody rated
    inter = build_interactions(make_ratings_data(rows, item_genres=genres), history=2)
    with pytest.raises(ForgetSpecError, match="no training interaction"):
        select_forget_set(inter, "genre:Comedy@users:1")
    with pytest.raises(ForgetSpecError, match="no training interaction"):
        select_forget_set(inter, "genre:Western")
    fs = select_forget_set(inter, "genre:comedy@users:2")
    assert fs.users == (2,)
    assert set(fs.forgotten["item_id"]) <= {5, 6, 7, 8}


def test_genre_only_in_test_split_selects_nothing(make_ratings_data):
    # the only Horror rating is user 1's last one: a test row, never a training interaction
    rows = [(1, i, 4, i) for i in range(1, 9)] + [(2, i, 2, 100 + i) for i in range(1, 8)]
    inter = build_interactions(make_ratings_data(rows, item_genres={8: ("Horror",)}), history=2)
    assert inter.frame.set_index(["user_id", "item_id"]).loc[(1, 8), "split"] == TEST
    with pytest.raises(ForgetSpecError, match="no training interaction"):
        select_forget_set(inter, "genre:Horror")


def test_genre_only_in_history_has_no_training_sample(make_ratings_data):
    rows = [(1, i, 4, i) for i in range(1, 9)] + [(2, i, 2, 100 + i) for i in range(1, 8)]
    inter = build_interactions(make_ratings_data(rows, item_genres={1: ("Horror",)}), history=2)
    with pytest.raises(ForgetSpecError, match="history-only"):
        select_forget_set(inter, "genre:Horror@users:1")


@pytest.mark.parametrize("spec,canonical", [
    ("users:0.1", "users:0.1"),
    ("  USERS : 0.10 ", "users:0.1"),
    ("users:12,40,7", "users:7,12,40"),
    ("users: 12 , 40,12", "users:12,40"),
    ("users:5", "users:5"),
    ("interactions:0.05", "interactions:0.05"),
    ("interactions:5e-2", "interactions:0.05"),
    ("genre:Horror", "genre:Horror"),
    ("genre:Horror@users:40,12", "genre:Horror@users:12,40"),
    ("Genre: Sci-Fi @ users:3", "genre:Sci-Fi@users:3"),
])
def test_str_round_trips_canonically(spec, canonical):
    parsed = parse_forget_spec(spec)
    assert str(parsed) == canonical
    assert parse_forget_spec(str(parsed)) == parsed
    assert str(parse_forget_spec(canonical)) == canonical


def test_str_round_trips_precise_fractions():
    for spec in ("users:0.1234567", "interactions:0.0123456789"):
        parsed = parse_forget_spec(spec)
        assert parse_forget_spec(str(parsed)) == parsed
    assert str(parse_forget_spec("users:0.1234567")) != str(parse_forget_spec("users:0.1234568"))


def test_genre_spec_keeps_case_until_resolved():
    # parsing keeps the text; selection resolves it to the dataset's spelling (checked above)
    assert parse_forget_spec("genre:horror").genre == "horror"


def test_genre_with_dangling_at_is_rejected():
    with pytest.raises(ForgetSpecError):
        parse_forget_spec("genre:Horror@")
