"""Load a MovieLens folder into the pipeline's wire format (items and events).

Two layouts are recognised, by the files present:

- **latest-small** (also ml-latest, ml-25m, ...): ``movies.csv`` (movieId,title,genres) and
  ``ratings.csv`` (userId,movieId,rating,timestamp), UTF-8 with a header row; ``tags.csv``
  (userId,movieId,tag,timestamp) is optional.
- **100K**: ``u.data`` (user, item, rating, timestamp; tab-separated) and ``u.item`` (id | title |
  release date | video release date | IMDb URL | 19 genre flags; pipe-separated, latin-1), with
  genre names from ``u.genre`` when present.

Mapping to the wire format:

- item: ``item_id = str(movieId)``, ``title`` as given, ``categories`` = genres
  ("(no genres listed)" and the 100K "unknown" genre give []), ``text`` = ``"<title>. Genres:
  <g1>, <g2>. Tags: <t1>, ..."`` with the up to 10 most frequent tags of the movie
  (lower-cased, ties alphabetical; the part is left out when there are none), ``attributes`` =
  ``{"dataset": layout, "year": "1995"}`` (year when the title ends in "(YYYY)"), and ``ts`` =
  the event time of the movie's first rating (the earliest rating in the data set for movies
  never rated), so every item exists before any event refers to it.
- rating -> event, ``value`` = the rating (0.5..5 stars), by rating r:

  ======================  ==============
  r >= 4                  ``"rate"``
  2 < r < 4 (2.5 .. 3.5)  ``"view"``
  r <= 2                  ``"dislike"``
  ======================  ==============

  ``ts = float(timestamp)`` (epoch seconds), ``text = None``, ``rec_id = None``,
  ``event_id = f"ml-{userId}-{movieId}-{timestamp}"``. Events are sorted by (ts, userId,
  movieId), numerically. Ratings of a movieId missing from the movie list are skipped with a
  logged warning (or raise, with ``strict=True``): the shared ml-latest-small copy ends with
  one such row (userId 999, movieId 999999) beyond the 100836 ratings its README describes.

Only the csv module is used; the files are read, never written or copied.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from recstream.evaluation.synthetic import WireEvent, WireItem
from recstream.models.errors import DatasetError, ValidationError
from recstream.models.vocabulary import RATING_NEGATIVE, RATING_POSITIVE

_log = logging.getLogger(__name__)

LATEST_SMALL = "latest-small"
ML_100K = "100k"
MAX_TAGS = 10

# Genre flag order of u.item, used when a 100K folder lacks u.genre.
ML_100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_NO_GENRE = frozenset({"(no genres listed)", "unknown"})
_YEAR = re.compile(r"\((\d{4})\)\s*$")

# A parsed rating: (timestamp, userId, movieId, rating), numeric so sorting is numeric.
_Rating = tuple[int, int, int, float]
# What a layout reader returns: movieId -> (title, genres), ratings, movieId -> tag counts.
_Parsed = tuple[dict[int, tuple[str, list[str]]], list[_Rating], dict[int, Counter[str]]]


def detect_layout(path: str | os.PathLike[str]) -> str:
    """``LATEST_SMALL`` or ``ML_100K`` for a MovieLens folder.

    Raises:
        DatasetError: not a folder, or neither layout's required files are present.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"MovieLens path {folder} is not a directory")
    if (folder / "ratings.csv").is_file() and (folder / "movies.csv").is_file():
        return LATEST_SMALL
    if (folder / "u.data").is_file() and (folder / "u.item").is_file():
        return ML_100K
    raise DatasetError(
        f"{folder} is not a MovieLens folder: expected ratings.csv + movies.csv "
        "(ml-latest-small layout) or u.data + u.item (ml-100k layout)"
    )


def _rows(path: Path, delimiter: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based row number, fields) for each non-empty row of a delimited file."""
    # 100K titles contain stray quotes; only the comma-separated files use CSV quoting.
    quote = delimiter == ","
    try:
        with path.open(newline="", encoding=encoding) as handle:
            reader = (
                csv.reader(handle, delimiter=delimiter)
                if quote
                else csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE)
            )
            for line, row in enumerate(reader, start=1):
                if row:
                    yield line, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _header(path: Path, rows: Iterator[tuple[int, list[str]]], wanted: list[str]) -> list[int]:
    """Column positions of ``wanted`` in the header row."""
    try:
        _, header = next(rows)
    except StopIteration:
        raise DatasetError(f"{path} is empty") from None
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [name for name in wanted if name not in header]
    if missing:
        raise DatasetError(f"{path} lacks column(s) {missing}; header is {header}")
    return [header.index(name) for name in wanted]


def _rating(path: Path, line: int, user: str, movie: str, rating: str, ts: str) -> _Rating:
    """Parse one rating row; ratings must lie in (0, 5] stars."""
    try:
        parsed = (int(ts), int(user), int(movie), float(rating))
    except ValueError as exc:
        raise DatasetError(f"{path}:{line}: bad rating row: {exc}") from exc
    if not 0.0 < parsed[3] <= 5.0:
        raise DatasetError(f"{path}:{line}: rating {rating} outside (0, 5]")
    return parsed


def _field(path: Path, line: int, row: list[str], i: int) -> str:
    """``row[i]``, or a DatasetError naming the line when the row is too short."""
    if i >= len(row):
        raise DatasetError(f"{path}:{line}: expected at least {i + 1} fields, got {len(row)}")
    return row[i]


def _read_latest(folder: Path) -> _Parsed:
    """Parse the latest-small layout."""
    movies_path, ratings_path, tags_path = (
        folder / "movies.csv",
        folder / "ratings.csv",
        folder / "tags.csv",
    )
    movies: dict[int, tuple[str, list[str]]] = {}
    rows = _rows(movies_path, ",", "utf-8")
    c_id, c_title, c_genres = _header(movies_path, rows, ["movieId", "title", "genres"])
    for line, row in rows:
        _field(movies_path, line, row, max(c_id, c_title, c_genres))
        try:
            movie_id = int(row[c_id])
        except ValueError as exc:
            raise DatasetError(f"{movies_path}:{line}: bad movieId {row[c_id]!r}") from exc
        genres = [g for g in row[c_genres].split("|") if g and g not in _NO_GENRE]
        movies[movie_id] = (row[c_title].strip(), genres)

    ratings: list[_Rating] = []
    rows = _rows(ratings_path, ",", "utf-8")
    cols = _header(ratings_path, rows, ["userId", "movieId", "rating", "timestamp"])
    for line, row in rows:
        _field(ratings_path, line, row, max(cols))
        u, m, r, t = (row[c] for c in cols)
        ratings.append(_rating(ratings_path, line, u, m, r, t))

    tags: dict[int, Counter[str]] = defaultdict(Counter)
    if tags_path.is_file():
        rows = _rows(tags_path, ",", "utf-8")
        c_movie, c_tag = _header(tags_path, rows, ["movieId", "tag"])
        for line, row in rows:
            _field(tags_path, line, row, max(c_movie, c_tag))
            tag = " ".join(row[c_tag].lower().split())
            try:
                movie_id = int(row[c_movie])
            except ValueError as exc:
                raise DatasetError(f"{tags_path}:{line}: bad movieId {row[c_movie]!r}") from exc
            if tag:
                tags[movie_id][tag] += 1
    return movies, ratings, tags


def _read_100k(folder: Path) -> _Parsed:
    """Parse the 100K layout (no tags)."""
    genre_names = list(ML_100K_GENRES)
    genre_path = folder / "u.genre"
    if genre_path.is_file():
        by_index: dict[int, str] = {}
        for line, row in _rows(genre_path, "|", "latin-1"):
            try:
                by_index[int(_field(genre_path, line, row, 1))] = row[0]
            except ValueError as exc:
                raise DatasetError(f"{genre_path}:{line}: bad genre index") from exc
        genre_names = [by_index[i] for i in sorted(by_index)]

    item_path = folder / "u.item"
    movies: dict[int, tuple[str, list[str]]] = {}
    n_flags = len(genre_names)
    for line, row in _rows(item_path, "|", "latin-1"):
        if len(row) < 5 + n_flags:
            raise DatasetError(
                f"{item_path}:{line}: expected {5 + n_flags} '|'-separated fields, got {len(row)}"
            )
        flags = row[-n_flags:]
        try:
            movie_id = int(row[0])
            on = [int(f) for f in flags]
        except ValueError as exc:
            raise DatasetError(f"{item_path}:{line}: bad movie id or genre flag: {exc}") from exc
        genres = [g for g, bit in zip(genre_names, on, strict=True) if bit and g not in _NO_GENRE]
        movies[movie_id] = (row[1].strip(), genres)

    data_path = folder / "u.data"
    ratings: list[_Rating] = []
    for line, row in _rows(data_path, "\t", "latin-1"):
        _field(data_path, line, row, 3)
        ratings.append(_rating(data_path, line, row[0], row[1], row[2], row[3]))
    return movies, ratings, {}


def _event_type(rating: float) -> str:
    """Wire event type of a star rating (see the module docstring)."""
    if rating >= RATING_POSITIVE:
        return "rate"
    if rating <= RATING_NEGATIVE:
        return "dislike"
    return "view"


def load_movielens(
    path: str | os.PathLike[str], limit: int | None = None, strict: bool = False
) -> tuple[list[WireItem], list[WireEvent]]:
    """Items and rating events of a MovieLens folder, in the wire format.

    Args:
        path: folder in the latest-small or 100K layout (read only).
        limit: keep only the first ``limit`` events in time order; None keeps all. Items are
            always the whole catalogue.
        strict: raise on ratings of movies missing from the catalogue instead of skipping them
            with a logged warning.

    Returns:
        (items sorted by numeric movieId, events sorted by (ts, userId, movieId)).

    Raises:
        DatasetError: unknown layout, unreadable or malformed files, or (with ``strict``) a
            rating of a movie that is not in the catalogue.
        ValidationError: negative ``limit``.
    """
    if limit is not None and limit < 0:
        raise ValidationError(f"limit must be >= 0 or None, got {limit}")
    folder = Path(path)
    layout = detect_layout(folder)
    movies, ratings, tags = _read_latest(folder) if layout == LATEST_SMALL else _read_100k(folder)

    orphans = [r for r in ratings if r[2] not in movies]
    if orphans:
        example = f"userId {orphans[0][1]}, movieId {orphans[0][2]}"
        message = f"{folder}: {len(orphans)} rating(s) refer to movies not in the catalogue"
        if strict:
            raise DatasetError(f"{message} (first: {example})")
        # An event whose item was never published would be dropped or fail downstream anyway;
        # skipping it here keeps the replay consistent and says so once.
        _log.warning("%s; skipped (first: %s)", message, example)
        ratings = [r for r in ratings if r[2] in movies]

    first_seen: dict[int, int] = {}
    for ts, _, movie_id, _ in ratings:
        if ts < first_seen.get(movie_id, ts + 1):
            first_seen[movie_id] = ts
    earliest = min((r[0] for r in ratings), default=0)

    items: list[WireItem] = []
    for movie_id in sorted(movies):
        title, genres = movies[movie_id]
        parts = [title]
        if genres:
            parts.append("Genres: " + ", ".join(genres))
        top_tags = sorted(tags.get(movie_id, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))
        if top_tags:
            parts.append("Tags: " + ", ".join(tag for tag, _ in top_tags[:MAX_TAGS]))
        attributes = {"dataset": layout}
        year = _YEAR.search(title)
        if year:
            attributes["year"] = year.group(1)
        items.append(
            {
                "item_id": str(movie_id),
                "title": title,
                "text": ". ".join(p.rstrip(".") for p in parts) + ".",
                "categories": genres,
                "attributes": attributes,
                "ts": float(first_seen.get(movie_id, earliest)),
            }
        )

    ratings.sort()  # (ts, userId, movieId, rating): time order, numeric tie-breaks
    if limit is not None:
        ratings = ratings[:limit]
    events: list[WireEvent] = [
        {
            "user_id": str(user_id),
            "item_id": str(movie_id),
            "event_type": _event_type(rating),
            "ts": float(ts),
            "value": rating,
            "text": None,
            "event_id": f"ml-{user_id}-{movie_id}-{ts}",
            "rec_id": None,
        }
        for ts, user_id, movie_id, rating in ratings
    ]
    return items, events
