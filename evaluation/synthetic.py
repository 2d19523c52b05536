"""Seeded, reproducible ground-truth generator for offline evaluation and live demos.

The generator builds a small "world" whose true preferences are known, then samples wire-format
events from it, so that an evaluation can compare what the pipeline believes against what is true.

World (built from ``SyntheticConfig`` and an anchor time, all randomness from one seed):

- **Topics.** ``n_topics`` named topics (astronomy, cooking, jazz, ...), each with its own word
  list. Item titles, descriptions and search queries are built from the item's topic words plus
  topic-neutral filler, so a sentence-embedding model can separate topics by text alone.
- **Items.** Topics are assigned round-robin and shuffled, so topic sizes differ by at most one.
  Each item has a popularity weight from a Zipf law over a random global rank r (1-based):
  ``w = r ** -zipf_exponent``, normalised to sum to 1 over the catalogue.
- **Users.** Each user has a base interest mixture ``theta0 ~ Dirichlet(alpha)`` over topics.
  A fraction of users drifts *gradually*: their mixture moves linearly from ``theta0`` to a second
  draw ``theta1`` over their active horizon. Another, disjoint fraction switches *abruptly*: at a
  recorded time ``tau`` the mixture jumps from ``theta0`` to ``theta1``, where ``theta1`` is
  arranged so the favourite topic changes. The rest keep ``theta0``.
- **Daily periodicity.** Each topic k has a peak time of day ``phi_k`` (seconds after midnight
  UTC). The true interest at event time t is::

      p_k(t) = base_k(t) * (1 + A * cos(2*pi * (t - phi_k) / 86400)) / Z(t)

  with ``0 <= A < 1`` (``daily_amplitude``) and Z(t) the normaliser, so ``p(t)`` always sums to 1.

Events (one per arrival of a Poisson process per user, mean gap ``mean_gap_s`` seconds):

- the event type is drawn from ``event_type_shares``;
- positive types (view, click, add_to_cart, purchase, rate) and search draw a topic from the
  user's true interest ``p(t)`` at the event time, then an item by popularity within that topic;
- negative types (skip, dislike) draw a topic from the *anti-interest* ``max(p) - p`` (so never
  the user's favourite topic), then an item by popularity within it;
- ``rate`` carries a rating in [0.5, 5] (half stars) that grows with the user's affinity for the
  item's topic, and a short review text; ``search`` has ``item_id=None`` and a query text.

Every event is drawn from exactly ``true_interest(user_id, event["ts"])`` (times are rounded to
milliseconds before the draw), which lets tests and evaluations reason about the ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from recstream.models.errors import ValidationError
from recstream.models.vocabulary import (
    EVENT_TYPES,
    NEGATIVE_EVENT_TYPES,
    RATING_NEGATIVE,
    RATING_POSITIVE,
)

SECONDS_PER_DAY = 86_400.0


class WireEvent(TypedDict):
    """One event in the pipeline's JSON wire format (a plain dict at runtime).

    ``item_id`` is None only for search; ``ts`` is event time in epoch seconds; ``value`` is the
    rating of a rate event; ``text`` a search query or review; ``event_id`` is unique and
    deterministic; ``rec_id`` names the recommendation that led to the event, if any.
    """

    user_id: str
    item_id: str | None
    event_type: str
    ts: float
    value: float | None
    text: str | None
    event_id: str
    rec_id: str | None


class WireItem(TypedDict):
    """One catalogue item in the wire format; ``ts`` is epoch seconds, ``text`` a description."""

    item_id: str
    title: str
    text: str
    categories: list[str]
    attributes: dict[str, str]
    ts: float


DEFAULT_EVENT_TYPE_SHARES: tuple[tuple[str, float], ...] = (
    ("view", 0.52),
    ("click", 0.20),
    ("add_to_cart", 0.06),
    ("purchase", 0.03),
    ("rate", 0.05),
    ("search", 0.06),
    ("skip", 0.06),
    ("dislike", 0.02),
)

# Topic vocabularies: no word appears in two lists, so that the only signal shared between two
# items of different topics is the topic-neutral filler from the templates below.
TOPIC_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "astronomy": (
        "telescope", "nebula", "galaxy", "comet", "orbit", "planet", "asteroid", "supernova",
        "constellation", "observatory", "eclipse", "meteor", "cosmos", "quasar", "exoplanet",
        "lunar", "solar", "stargazing", "astronaut", "rocket", "satellite", "gravity", "pulsar",
        "spectroscopy",
    ),
    "cooking": (
        "recipe", "sourdough", "braise", "saute", "simmer", "spice", "garlic", "pastry",
        "skillet", "marinade", "roast", "broth", "dough", "oven", "caramelize", "dumpling",
        "risotto", "seasoning", "kitchen", "baking", "sauce", "vegetables", "chef", "noodles",
    ),
    "jazz": (
        "saxophone", "trumpet", "bebop", "improvisation", "swing", "quartet", "ballad",
        "trombone", "rhythm", "blues", "bassist", "drummer", "melody", "chord", "standards",
        "vinyl", "pianist", "groove", "solo", "fusion", "scat", "harmony", "bandleader", "combo",
    ),
    "football": (
        "striker", "goalkeeper", "penalty", "midfield", "league", "tournament", "coach",
        "stadium", "tackle", "dribble", "offside", "referee", "transfer", "defender", "kickoff",
        "championship", "derby", "header", "fans", "squad", "goal", "captain", "winger",
        "playoffs",
    ),
    "gardening": (
        "compost", "seedlings", "tomatoes", "pruning", "soil", "mulch", "perennials",
        "greenhouse", "watering", "roses", "orchard", "shrubs", "weeds", "bulbs", "fertilizer",
        "trellis", "hedge", "blossom", "harvest", "seeds", "lawn", "tulips", "irrigation",
        "allotment",
    ),
    "programming": (
        "compiler", "python", "debugging", "algorithm", "database", "refactoring", "function",
        "repository", "framework", "testing", "recursion", "syntax", "kernel", "server",
        "deployment", "variable", "interface", "library", "concurrency", "api", "terminal",
        "script", "software", "code",
    ),
    "finance": (
        "stocks", "dividend", "portfolio", "inflation", "mortgage", "budget", "savings", "bonds",
        "investing", "tax", "retirement", "equity", "market", "broker", "pension", "credit",
        "loan", "earnings", "valuation", "currency", "banking", "wealth", "index", "fund",
    ),
    "travel": (
        "itinerary", "backpacking", "passport", "airline", "hostel", "island", "beach",
        "flights", "luggage", "sightseeing", "cruise", "resort", "tourism", "visa", "souvenirs",
        "roadtrip", "destination", "landmarks", "hotel", "adventure", "coastline", "train",
        "journey", "expedition",
    ),
    "photography": (
        "camera", "lens", "aperture", "shutter", "exposure", "portrait", "tripod", "zoom",
        "landscape", "focus", "sensor", "darkroom", "film", "editing", "composition", "flash",
        "bokeh", "megapixel", "viewfinder", "prints", "studio", "filter", "monochrome",
        "snapshot",
    ),
    "history": (
        "empire", "medieval", "dynasty", "revolution", "archaeology", "ancient", "pharaoh",
        "castle", "war", "treaty", "monarchy", "renaissance", "colonial", "manuscript",
        "chronicle", "civilization", "emperor", "knights", "artifacts", "battle", "rome",
        "kingdom", "archives", "heritage",
    ),
    "fitness": (
        "workout", "cardio", "strength", "squats", "running", "yoga", "stretching", "protein",
        "endurance", "gym", "dumbbell", "marathon", "pilates", "kettlebell", "training",
        "muscles", "sprint", "recovery", "hydration", "treadmill", "pushups", "mobility",
        "hiit", "athlete",
    ),
    "fashion": (
        "dress", "denim", "runway", "designer", "jacket", "fabric", "couture", "sneakers",
        "style", "wardrobe", "silk", "tailoring", "accessories", "boutique", "trend", "handbag",
        "vintage", "leather", "outfit", "knitwear", "scarf", "heels", "catwalk", "streetwear",
    ),
}  # fmt: skip

# Topic-neutral filler, shared by every topic.
_TITLE_NOUNS: tuple[str, ...] = (
    "Guide", "Notes", "Handbook", "Stories", "Essentials", "Primer", "Journal", "Digest",
    "Sessions", "Almanac", "Companion", "Letters",
)  # fmt: skip
_FORMATS: tuple[str, ...] = ("article", "video", "podcast", "course", "book")
_LEVELS: tuple[str, ...] = ("beginner", "intermediate", "advanced")
_QUERY_PREFIXES: tuple[str, ...] = ("", "", "best ", "how to ", "learn ", "new ")

_STATIC, _GRADUAL, _ABRUPT = 0, 1, 2
_CATALOGUE_MAX_AGE_S = 30 * SECONDS_PER_DAY


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic world and of the batch event stream.

    Attributes:
        n_items: catalogue size (>= n_topics, so every topic has an item).
        n_users: number of users.
        n_topics: number of topics, 2..len(TOPIC_VOCABULARIES).
        events_per_user: events per user in ``generate`` (the live stream is endless).
        start_ts: anchor of the batch stream, epoch seconds (event time). Users start within the
            first quarter of their horizon after it.
        mean_gap_s: mean time between two events of one user, seconds (exponential gaps).
        gradual_drift_fraction: fraction of users whose interest drifts linearly over their
            horizon ``events_per_user * mean_gap_s`` seconds.
        abrupt_switch_fraction: fraction of users (disjoint from the drifting ones) whose interest
            switches once, at a time recorded in ``SyntheticDataset.switch_times``.
        daily_amplitude: amplitude A in [0, 1) of the daily modulation of topic interest.
        interest_concentration: Dirichlet concentration alpha (> 0) of user mixtures; below 1
            gives users a few dominant topics.
        zipf_exponent: exponent s >= 0 of item popularity ``rank ** -s`` (0 = uniform).
        event_type_shares: (event type, share) pairs; shares are normalised to sum to 1.
        seed: seed of every random draw.
    """

    n_items: int = 500
    n_users: int = 50
    n_topics: int = 8
    events_per_user: int = 100
    start_ts: float = 1_700_000_000.0
    mean_gap_s: float = 600.0
    gradual_drift_fraction: float = 0.2
    abrupt_switch_fraction: float = 0.2
    daily_amplitude: float = 0.3
    interest_concentration: float = 0.3
    zipf_exponent: float = 1.0
    event_type_shares: tuple[tuple[str, float], ...] = DEFAULT_EVENT_TYPE_SHARES
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject inconsistent parameters early, naming the field."""
        if not 2 <= self.n_topics <= len(TOPIC_VOCABULARIES):
            raise ValidationError(
                f"n_topics must be in 2..{len(TOPIC_VOCABULARIES)}, got {self.n_topics}"
            )
        if self.n_items < self.n_topics:
            raise ValidationError(f"n_items ({self.n_items}) must be >= n_topics")
        if self.n_users < 1:
            raise ValidationError(f"n_users must be >= 1, got {self.n_users}")
        if self.events_per_user < 1:
            raise ValidationError(f"events_per_user must be >= 1, got {self.events_per_user}")
        if not (math.isfinite(self.start_ts) and self.start_ts >= 0.0):
            raise ValidationError(f"start_ts must be finite epoch seconds, got {self.start_ts}")
        if not (math.isfinite(self.mean_gap_s) and self.mean_gap_s > 0.0):
            raise ValidationError(f"mean_gap_s must be > 0 seconds, got {self.mean_gap_s}")
        for name in ("gradual_drift_fraction", "abrupt_switch_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValidationError(f"{name} must be in [0, 1], got {value}")
        if self.gradual_drift_fraction + self.abrupt_switch_fraction > 1.0:
            raise ValidationError("gradual_drift_fraction + abrupt_switch_fraction must be <= 1")
        if not 0.0 <= self.daily_amplitude < 1.0:
            # A >= 1 could zero or negate a topic's weight at its trough.
            raise ValidationError(f"daily_amplitude must be in [0, 1), got {self.daily_amplitude}")
        if not self.interest_concentration > 0.0:
            raise ValidationError("interest_concentration must be > 0")
        if not self.zipf_exponent >= 0.0:
            raise ValidationError("zipf_exponent must be >= 0")
        names = [name for name, _ in self.event_type_shares]
        unknown = sorted(set(names) - set(EVENT_TYPES))
        if unknown or len(set(names)) != len(names):
            raise ValidationError(
                f"event_type_shares must name distinct types from {EVENT_TYPES}; bad: {unknown}"
            )
        shares = [share for _, share in self.event_type_shares]
        if any(not (math.isfinite(s) and s >= 0.0) for s in shares) or sum(shares) <= 0.0:
            raise ValidationError("event_type_shares must be finite, >= 0, with a positive sum")

    @property
    def horizon_s(self) -> float:
        """Nominal active span of one user, seconds: ``events_per_user * mean_gap_s``."""
        return self.events_per_user * self.mean_gap_s


def _categorical(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Row-wise inverse-CDF draw: index j of row i with P = probs[i, j] / sum(probs[i])."""
    cdf = np.cumsum(probs, axis=1)
    # Scaling by the row total absorbs rounding in the cumulative sum.
    idx = (cdf < uniforms[:, None] * cdf[:, -1:]).sum(axis=1)
    return np.minimum(idx, probs.shape[1] - 1)


class _World:
    """Items, users and their true interests, anchored at ``anchor_ts``.

    Built from ``config`` with a child seed stream of its own, so the world depends only on the
    config and the anchor: ``generate`` and ``iter_live`` with the same anchor share it.
    """

    def __init__(self, config: SyntheticConfig, anchor_ts: float, rng: np.random.Generator):
        self.config = config
        self.anchor_ts = anchor_ts
        n_topics, n_items, n_users = config.n_topics, config.n_items, config.n_users
        self.topics: list[str] = list(TOPIC_VOCABULARIES)[:n_topics]
        self.vocab: list[tuple[str, ...]] = [TOPIC_VOCABULARIES[t] for t in self.topics]

        # Items: balanced topic sizes, Zipf popularity over a random global rank.
        self.item_topic_idx = rng.permutation(np.arange(n_items) % n_topics)
        ranks = rng.permutation(n_items) + 1
        weights = ranks.astype(float) ** -config.zipf_exponent
        self.popularity = weights / weights.sum()
        width = len(str(n_items - 1))
        self.item_ids = [f"item-{i:0{width}d}" for i in range(n_items)]
        self.topic_items: list[np.ndarray] = []
        self.topic_cdf: list[np.ndarray] = []
        for k in range(n_topics):
            members = np.flatnonzero(self.item_topic_idx == k)
            self.topic_items.append(members)
            self.topic_cdf.append(np.cumsum(self.popularity[members]))
        ages = rng.uniform(0.0, _CATALOGUE_MAX_AGE_S, size=n_items)
        self.items = [
            self._make_item(i, round(anchor_ts - float(ages[i]), 3), rng) for i in range(n_items)
        ]

        # Users. Every array is drawn for all users, whatever their kind, so changing a fraction
        # re-labels users without shifting the random stream of the others.
        uwidth = len(str(n_users - 1))
        self.user_ids = [f"user-{u:0{uwidth}d}" for u in range(n_users)]
        self.user_index = {uid: u for u, uid in enumerate(self.user_ids)}
        alpha = np.full(n_topics, config.interest_concentration)
        self.theta0 = rng.dirichlet(alpha, size=n_users)
        second = rng.dirichlet(alpha, size=n_users)
        self.begin_ts = anchor_ts + rng.uniform(0.0, 0.25 * config.horizon_s, size=n_users)
        switch_frac = rng.uniform(0.3, 0.7, size=n_users)
        order = rng.permutation(n_users)
        self.phase_s = rng.uniform(0.0, SECONDS_PER_DAY, size=n_topics)

        n_gradual = round(config.gradual_drift_fraction * n_users)
        n_abrupt = round(config.abrupt_switch_fraction * n_users)
        n_abrupt = min(n_abrupt, n_users - n_gradual)
        self.kind = np.full(n_users, _STATIC)
        self.kind[order[:n_gradual]] = _GRADUAL
        self.kind[order[n_gradual : n_gradual + n_abrupt]] = _ABRUPT
        self.theta1 = self.theta0.copy()
        self.switch_ts = np.full(n_users, np.nan)
        for u in np.flatnonzero(self.kind != _STATIC):
            target = second[u].copy()
            if self.kind[u] == _ABRUPT:
                # Make the switch visible: the old favourite must not stay the favourite, so
                # hand the new draw's top weight to the topic the user liked least.
                fav = int(np.argmax(self.theta0[u]))
                if int(np.argmax(target)) == fav:
                    least = int(np.argmin(self.theta0[u]))
                    if least == fav:  # all weights equal: any other topic will do
                        least = (fav + 1) % n_topics
                    target[[fav, least]] = target[[least, fav]]
                self.switch_ts[u] = round(
                    float(self.begin_ts[u] + switch_frac[u] * config.horizon_s), 3
                )
            self.theta1[u] = target

        names = [name for name, _ in config.event_type_shares]
        shares = np.array([share for _, share in config.event_type_shares], dtype=float)
        full = np.zeros(len(EVENT_TYPES))
        for name, share in zip(names, shares, strict=True):
            full[EVENT_TYPES.index(name)] = share
        self.type_probs = full / full.sum()

    def _words(self, k: int, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` distinct words of topic ``k``'s vocabulary."""
        picks = rng.choice(len(self.vocab[k]), size=n, replace=False)
        return [self.vocab[k][int(j)] for j in picks]

    def _make_item(self, i: int, ts: float, rng: np.random.Generator) -> WireItem:
        k = int(self.item_topic_idx[i])
        w = self._words(k, 7, rng)
        fmt = _FORMATS[int(rng.integers(len(_FORMATS)))]
        level = _LEVELS[int(rng.integers(len(_LEVELS)))]
        noun = _TITLE_NOUNS[int(rng.integers(len(_TITLE_NOUNS)))]
        title = f"{w[0].capitalize()} and {w[1].capitalize()} {noun}"
        article = "An" if level[0] in "aeiou" else "A"
        text = (
            f"{article} {level} {fmt} on {w[0]} and {w[1]}. "
            f"It covers {w[2]}, {w[3]} and {w[4]}, with practical notes on {w[5]} and {w[6]}."
        )
        return {
            "item_id": self.item_ids[i],
            "title": title,
            "text": text,
            "categories": [self.topics[k]],
            "attributes": {"format": fmt, "level": level},
            "ts": ts,
        }

    def interest(self, users: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """True interest p(t), shape (len(users), n_topics); each row sums to 1."""
        users = np.asarray(users, dtype=np.int64)
        ts = np.asarray(ts, dtype=float)
        kind = self.kind[users]
        mix = np.zeros(len(users))
        gradual = kind == _GRADUAL
        mix[gradual] = np.clip(
            (ts[gradual] - self.begin_ts[users[gradual]]) / self.config.horizon_s, 0.0, 1.0
        )
        abrupt = kind == _ABRUPT
        mix[abrupt] = (ts[abrupt] >= self.switch_ts[users[abrupt]]).astype(float)
        base = (1.0 - mix)[:, None] * self.theta0[users] + mix[:, None] * self.theta1[users]
        angle = 2.0 * np.pi * (ts[:, None] - self.phase_s[None, :]) / SECONDS_PER_DAY
        weights = base * (1.0 + self.config.daily_amplitude * np.cos(angle))
        return weights / weights.sum(axis=1, keepdims=True)

    def _sample_items(self, topic: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Item index per row: popularity-weighted within the row's topic."""
        out = np.empty(len(topic), dtype=np.int64)
        for k in range(self.config.n_topics):
            mask = topic == k
            if not mask.any():
                continue
            cdf = self.topic_cdf[k]
            pos = np.searchsorted(cdf, uniforms[mask] * cdf[-1], side="right")
            out[mask] = self.topic_items[k][np.minimum(pos, len(cdf) - 1)]
        return out

    def draw_events(
        self,
        users: np.ndarray,
        ts: np.ndarray,
        event_ids: list[str],
        rng: np.random.Generator,
    ) -> list[WireEvent]:
        """Wire-format events for (user, time) pairs, in the given order."""
        n = len(users)
        probs = self.interest(users, ts)
        types = rng.choice(len(EVENT_TYPES), size=n, p=self.type_probs)
        u_topic = rng.random(n)
        u_item = rng.random(n)
        liked = _categorical(probs, u_topic)
        anti = probs.max(axis=1, keepdims=True) - probs
        flat = anti.sum(axis=1) <= 0.0
        anti[flat] = 1.0  # uniform interest: every topic is equally "not liked"
        disliked = _categorical(anti, u_topic)
        negative = np.isin(types, [EVENT_TYPES.index(t) for t in NEGATIVE_EVENT_TYPES])
        topic = np.where(negative, disliked, liked)
        item = self._sample_items(topic, u_item)

        events: list[WireEvent] = []
        for j in range(n):
            etype = EVENT_TYPES[int(types[j])]
            k = int(topic[j])
            item_id: str | None = self.item_ids[int(item[j])]
            value: float | None = None
            text: str | None = None
            if etype == "search":
                item_id = None
                prefix = _QUERY_PREFIXES[int(rng.integers(len(_QUERY_PREFIXES)))]
                text = prefix + " ".join(self._words(k, int(rng.integers(1, 4)), rng))
            elif etype == "rate":
                value, text = self._rating(float(probs[j, k] / probs[j].max()), k, rng)
            events.append(
                {
                    "user_id": self.user_ids[int(users[j])],
                    "item_id": item_id,
                    "event_type": etype,
                    "ts": float(ts[j]),
                    "value": value,
                    "text": text,
                    "event_id": event_ids[j],
                    "rec_id": None,
                }
            )
        return events

    def _rating(self, affinity: float, k: int, rng: np.random.Generator) -> tuple[float, str]:
        """Half-star rating in [0.5, 5] with mean 1 + 4*affinity, plus a short review text.

        ``affinity`` = p_k / max(p) in (0, 1]: the user's interest in the item's topic relative
        to their favourite topic.
        """
        raw = 1.0 + 4.0 * affinity + rng.normal(0.0, 0.6)
        rating = float(min(5.0, max(0.5, round(raw * 2.0) / 2.0)))
        if rating >= RATING_POSITIVE:
            mood = "loved the"
        elif rating <= RATING_NEGATIVE:
            mood = "disappointing on"
        else:
            mood = "decent take on"
        a, b = self._words(k, 2, rng)
        return rating, f"{mood} {a} and {b}"


class SyntheticDataset:
    """The output of ``generate``: catalogue, sorted events and the ground truth behind them.

    Attributes:
        config: the configuration it was generated from.
        topics: topic names; index k of ``true_interest`` refers to ``topics[k]``.
        items: wire-format item dicts, ordered by item_id.
        events: wire-format event dicts, sorted by (ts, user, per-user sequence).
        user_ids: every user id, including users whose events might be filtered out later.
        switch_times: user_id -> event time (epoch seconds) of the abrupt switch.
        drift_users: ids of users whose interest drifts gradually.
        item_topic: item_id -> topic name.
        item_popularity: item_id -> true popularity weight (sums to 1 over the catalogue).
    """

    def __init__(self, world: _World, events: list[WireEvent]):
        self._world = world
        self.config = world.config
        self.topics: list[str] = list(world.topics)
        self.items: list[WireItem] = world.items
        self.events: list[WireEvent] = events
        self.user_ids: list[str] = list(world.user_ids)
        self.switch_times: dict[str, float] = {
            world.user_ids[u]: float(world.switch_ts[u])
            for u in np.flatnonzero(world.kind == _ABRUPT)
        }
        self.drift_users: frozenset[str] = frozenset(
            world.user_ids[u] for u in np.flatnonzero(world.kind == _GRADUAL)
        )
        self.item_topic: dict[str, str] = {
            iid: world.topics[int(k)]
            for iid, k in zip(world.item_ids, world.item_topic_idx, strict=True)
        }
        self.item_popularity: dict[str, float] = {
            iid: float(w) for iid, w in zip(world.item_ids, world.popularity, strict=True)
        }

    def true_interest(self, user_id: str, ts: float) -> np.ndarray:
        """True topic mixture of ``user_id`` at event time ``ts`` (epoch seconds).

        Returns a float array of length ``n_topics``, non-negative, summing to 1, aligned with
        ``topics``. For abrupt-switch users the post-switch mixture applies from ``ts >= tau``.

        Raises:
            ValidationError: unknown user id.
        """
        u = self._world.user_index.get(user_id)
        if u is None:
            raise ValidationError(f"unknown synthetic user_id {user_id!r}")
        return self._world.interest(np.array([u]), np.array([float(ts)]))[0]


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the world, the batch events and the live events."""
    world_seq, batch_seq, live_seq = np.random.SeedSequence(seed).spawn(3)
    return (
        np.random.default_rng(world_seq),
        np.random.default_rng(batch_seq),
        np.random.default_rng(live_seq),
    )


def generate(config: SyntheticConfig) -> SyntheticDataset:
    """Generate the world anchored at ``config.start_ts`` and ``events_per_user`` events per user.

    Deterministic: the same config gives identical items, events and ground truth. Event ids are
    ``f"syn{seed}-{user_id}-{n}"`` with n the user's 0-based event number.
    """
    world_rng, batch_rng, _ = _streams(config.seed)
    world = _World(config, config.start_ts, world_rng)
    n_users, per_user = config.n_users, config.events_per_user
    gaps = batch_rng.exponential(config.mean_gap_s, size=(n_users, per_user))
    ts = np.round(world.begin_ts[:, None] + np.cumsum(gaps, axis=1), 3).ravel()
    users = np.repeat(np.arange(n_users), per_user)
    seq = np.tile(np.arange(per_user), n_users)
    order = np.lexsort((seq, users, ts))
    ids = [f"syn{config.seed}-{world.user_ids[users[i]]}-{seq[i]}" for i in order]
    events = world.draw_events(users[order], ts[order], ids, batch_rng)
    return SyntheticDataset(world, events)


def iter_live(
    config: SyntheticConfig, start_ts: float, chunk_size: int = 256
) -> Iterator[WireEvent]:
    """Endless event stream for demos, with event time advancing from ``start_ts``.

    The world is anchored at ``start_ts`` (pass ``time.time()`` for "now"); its items and ground
    truth equal those of ``generate(dataclasses.replace(config, start_ts=start_ts))``, so a demo
    can publish that dataset's ``items`` first. Users emit events as one merged Poisson process
    (each user at rate ``1 / mean_gap_s``), so timestamps are non-decreasing; pacing against the
    wall clock is the caller's job. Deterministic for a (config, start_ts) pair; ``chunk_size``
    only sets how many events are drawn at once and is part of that determinism.
    Event ids are ``f"live{seed}-{n}"``, n counting from 0.
    """
    if chunk_size < 1:
        raise ValidationError(f"chunk_size must be >= 1, got {chunk_size}")
    world_rng, _, live_rng = _streams(config.seed)
    world = _World(config, float(start_ts), world_rng)
    mean_gap_all = config.mean_gap_s / config.n_users
    clock = float(start_ts)
    emitted = 0
    while True:
        times = clock + np.cumsum(live_rng.exponential(mean_gap_all, size=chunk_size))
        clock = float(times[-1])
        users = live_rng.integers(0, config.n_users, size=chunk_size)
        ids = [f"live{config.seed}-{emitted + j}" for j in range(chunk_size)]
        emitted += chunk_size
        yield from world.draw_events(users, np.round(times, 3), ids, live_rng)
