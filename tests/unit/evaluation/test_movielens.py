"""Tests for recstream.evaluation.movielens: the shared latest-small copy and tiny fixtures."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from recstream.evaluation.movielens import LATEST_SMALL, ML_100K, detect_layout, load_movielens
from recstream.evaluation.synthetic import WireEvent, WireItem
from recstream.models.errors import DatasetError, ValidationError

ML_SMALL = Path("/work/shared/data/ml-latest-small")
MLData = tuple[list[WireItem], list[WireEvent]]
EVENT_KEYS = {"user_id", "item_id", "event_type", "ts", "value", "text", "event_id", "rec_id"}


@pytest.fixture(scope="module")
def ml_small() -> MLData:
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip(f"{ML_SMALL} not present")
    return load_movielens(ML_SMALL)


def test_latest_small_counts_and_shape(ml_small: MLData) -> None:
    items, events = ml_small
    assert detect_layout(ML_SMALL) == LATEST_SMALL
    assert len(items) == 9742
    assert len(events) == 100836  # the README's count; the orphan row is skipped
    assert [int(i["item_id"]) for i in items] == sorted(int(i["item_id"]) for i in items)
    keys = [(e["ts"], int(e["user_id"]), int(e["item_id"])) for e in events]
    assert keys == sorted(keys)
    assert len({e["event_id"] for e in events}) == len(events)
    for e in events[:: len(events) // 50]:
        assert set(e) == EVENT_KEYS and isinstance(e["ts"], float)
        assert e["event_id"] == f"ml-{e['user_id']}-{e['item_id']}-{int(e['ts'])}"
        value = e["value"]
        assert isinstance(value, float)
        expected = "rate" if value >= 4 else "dislike" if value <= 2 else "view"
        assert e["event_type"] == expected


def test_latest_small_item_mapping(ml_small: MLData) -> None:
    items, events = ml_small
    by_id = {i["item_id"]: i for i in items}
    toy = by_id["1"]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["categories"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy["attributes"]["year"] == "1995"
    assert toy["text"].startswith("Toy Story (1995). Genres: Adventure, Animation")
    assert "Tags: pixar" in toy["text"]
    no_genre = [i for i in items if not i["categories"]]
    assert no_genre and all("Genres" not in i["text"] for i in no_genre)
    first_ts: dict[str, float] = {}
    for e in events:
        first_ts.setdefault(e["item_id"], e["ts"])
    assert all(by_id[iid]["ts"] == ts for iid, ts in first_ts.items())


def test_latest_small_limit(ml_small: MLData) -> None:
    items, events = load_movielens(ML_SMALL, limit=500)
    assert len(items) == 9742
    assert events == ml_small[1][:500]


def test_latest_small_strict_rejects_orphans() -> None:
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip(f"{ML_SMALL} not present")
    with pytest.raises(DatasetError, match="not in the catalogue"):
        load_movielens(ML_SMALL, strict=True)


def _write_100k(folder: Path, with_genre_file: bool = True) -> Path:
    folder.mkdir()
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime"]
    genres += ["Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery"]
    genres += ["Romance", "Sci-Fi", "Thriller", "War", "Western"]
    if with_genre_file:
        text = "".join(f"{g}|{i}\n" for i, g in enumerate(genres)) + "\n"
        (folder / "u.genre").write_text(text, encoding="latin-1")

    def flags(*names: str) -> str:
        return "|".join("1" if g in names else "0" for g in genres)

    items = [
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags('Animation', 'Comedy')}",
        f'2|Señor "Quoted" (1996)|01-Jan-1996||http://y|{flags("Drama")}',
        f"3|unknown||||{flags('unknown')}",
    ]
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    ratings = ["7\t2\t5\t900", "3\t1\t2\t800", "3\t2\t3\t800", "1\t1\t4\t950", "2\t9\t4\t1000"]
    (folder / "u.data").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    return folder


def test_100k_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _write_100k(tmp_path / "ml-100k")
    assert detect_layout(folder) == ML_100K
    with caplog.at_level(logging.WARNING):
        items, events = load_movielens(folder)
    assert "movieId 9" in caplog.text  # the orphan rating is reported, then skipped
    assert [i["item_id"] for i in items] == ["1", "2", "3"]
    assert items[0]["categories"] == ["Animation", "Comedy"]
    assert items[0]["text"] == "Toy Story (1995). Genres: Animation, Comedy."
    assert items[1]["title"] == 'Señor "Quoted" (1996)'
    assert items[1]["attributes"] == {"dataset": ML_100K, "year": "1996"}
    assert items[2]["categories"] == [] and items[2]["text"] == "unknown."
    assert [i["ts"] for i in items] == [800.0, 800.0, 800.0]  # first rating; unrated -> earliest
    assert [(e["user_id"], e["item_id"], e["event_type"], e["value"]) for e in events] == [
        ("3", "1", "dislike", 2.0),
        ("3", "2", "view", 3.0),
        ("7", "2", "rate", 5.0),
        ("1", "1", "rate", 4.0),
    ]
    assert events[0]["event_id"] == "ml-3-1-800"
    assert load_movielens(folder, limit=2)[1] == events[:2]
    assert load_movielens(folder, limit=0)[1] == []
    with pytest.raises(DatasetError, match="movieId 9"):
        load_movielens(folder, strict=True)


def test_100k_without_genre_file(tmp_path: Path) -> None:
    folder = _write_100k(tmp_path / "ml-100k", with_genre_file=False)
    items, _ = load_movielens(folder)
    assert items[1]["categories"] == ["Drama"]


def test_unknown_layout_and_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a MovieLens folder"):
        load_movielens(tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        load_movielens(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "movies.csv").write_text("movieId,title,genres\n1,A (2000),Drama\n")
    (bad / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,four,5\n")
    with pytest.raises(DatasetError, match=r"ratings.csv:2"):
        load_movielens(bad)
    (bad / "ratings.csv").write_text("userId,movie,rating,timestamp\n1,1,4,5\n")
    with pytest.raises(DatasetError, match="lacks column"):
        load_movielens(bad)
    (bad / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4,5\n")
    with pytest.raises(ValidationError):
        load_movielens(bad, limit=-1)
    items, events = load_movielens(bad)
    assert len(items) == 1 and events[0]["event_type"] == "rate"
