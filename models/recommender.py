"""The recommender engine: batches of events in, new user states, shared deltas and lists out.

Two verbs, in the river/bytewax spirit, with every input a value passed in:

- ``apply(states, events)`` folds a batch of decoded events, in order, into the users' states
  (interest vectors, Bayesian category evidence, windowed counts, recent items), collects the
  shared statistics the batch teaches (popularity and co-visitation terms, per shard) and
  snapshots each user after each event: a ranking request that reflects exactly that user's
  events up to it.
- ``rank(applied)`` ranks every request of the batch at once (one matrix product of all the
  requests' interest vectors against the catalogue, then per request candidates, seven signals,
  fusion, MMR and exploration) and, walking the requests in event order, applies feedback:
  ``w ← Π(w + η·(d − μ)/‖d − μ‖)`` with d the consumed item's signals in the list the user was
  served (the previous request's list, within the batch too) and μ the mean of that list's
  candidate pool under a softmax of its fused scores (``feedback_temperature``; or of the
  served list itself, ``feedback_baseline="served"``).

Shared statistics (popularity, co-visitation, sequential rules, global weights) are frozen
during a batch and change only when deltas are applied (`SharedStats.apply`), in every runner
alike. The engine reads no settings and no clock; exploration is seeded per (user, event).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from recstream.models import decay
from recstream.models.batch_signals import (
    BatchContext,
    CoVisits,
    SignalInputs,
    candidate_pool,
    covisit_scores,
    raw_signals,
    segment_bounds,
    semantic_scores,
    semantic_tops,
    sequence_scores,
    top_rows,
)
from recstream.models.catalog import Catalog
from recstream.models.covisitation import pair_increments
from recstream.models.diversity import mmr_select_batch
from recstream.models.errors import ConfigError, RecstreamError, ValidationError
from recstream.models.exploration import allocate_from_posteriors, exploration_slots
from recstream.models.fusion import (
    RankedItem,
    fuse_rows,
    normalise_segments,
    normalise_with,
    top_per_segment,
)
from recstream.models.interest_posterior import category_evidence_from_text
from recstream.models.interest_state import InterestEvent, InterestParams
from recstream.models.model_signal import ModelSignal, model_candidates, model_column
from recstream.models.sasrec import Snapshot
from recstream.models.sequence_rules import next_pairs
from recstream.models.shared_stats import SharedDelta, SharedStats
from recstream.models.signals import DEFAULT_SIGNALS
from recstream.models.user_record import ServedList, UserRecord
from recstream.models.weights import EtaSchedule, WeightState, feedback_sign, pool_baseline

SIGNAL_NAMES: tuple[str, ...] = DEFAULT_SIGNALS.names
SASREC = SIGNAL_NAMES.index("sasrec")
FUSED: Literal["fused"] = "fused"
POPULARITY: Literal["popularity"] = "popularity"
ListPolicy = Literal["every", "last", "none"]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EngineParams:
    """Hyperparameters (half-lives and windows in event-time seconds)."""

    interest: InterestParams = field(default_factory=InterestParams)
    ranker: Literal["fused", "popularity"] = FUSED
    k: int = 10
    candidates_per_source: int = 50
    mmr_trade_off: float = 0.8
    mmr_pool: int = 3
    exploration_share: float = 0.1
    arm_items: int = 20
    posterior_alpha0: float = 1.0
    eta: float = 0.05
    eta_global: float = 0.01
    eta_tau: float | None = None
    weight_shrinkage: float = 10.0
    covisit_window_s: float = 6 * 3600.0
    covisit_half_life_s: float = 30 * 86_400.0
    covisit_neighbours: int = 30
    covisit_recent: int = 5
    sequence_window_s: float = 3600.0
    sequence_steps: int = 20
    sequence_sources: int = 10
    sequence_gap_half_life_s: float = 3600.0
    sequence_half_life_s: float = 365 * 86_400.0
    sequence_neighbours: int = 100
    sequence_candidates: int = 50
    sasrec_candidates: int = 50
    popularity_half_life_s: float = 7 * 86_400.0
    freshness_half_life_s: float = 30 * 86_400.0
    window_short_s: float = 3600.0
    window_short_step_s: float = 1800.0
    window_long_s: float = 86_400.0
    window_long_step_s: float = 6 * 3600.0
    served_kept: int = 3
    feedback_baseline: Literal["pool", "served"] = "pool"
    feedback_temperature: float = 0.2

    def __post_init__(self) -> None:
        # The engine is built without the settings object: it checks what would otherwise
        # fail deep inside a batch (an empty top-k, an MMR pick from no pool, a share > 1).
        for name in ("k", "candidates_per_source", "mmr_pool", "served_kept"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mmr_trade_off", "exploration_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.weight_shrinkage < 0 or self.eta < 0 or self.eta_global < 0:
            raise ConfigError("weight_shrinkage, eta and eta_global must be >= 0")
        if not self.feedback_temperature > 0:  # inf: the plain mean; NaN is refused too
            raise ConfigError(f"feedback_temperature must be > 0, got {self.feedback_temperature}")

    def with_dim(self, dim: int) -> EngineParams:
        """The same hyperparameters for `dim`-wide vectors (the encoder's)."""
        if self.interest.dim == dim:
            return self
        return replace(self, interest=replace(self.interest, dim=dim))

    def shared_stats(self) -> SharedStats:
        """An empty replica of the shared statistics with these hyperparameters."""
        return SharedStats(
            len(SIGNAL_NAMES),
            popularity_half_life_s=self.popularity_half_life_s,
            covisit_half_life_s=self.covisit_half_life_s,
            covisit_capacity=self.covisit_neighbours,
            sequence_half_life_s=self.sequence_half_life_s,
            sequence_capacity=self.sequence_neighbours,
        )

    @property
    def recent_kept(self) -> int:
        """Distinct recent items kept per user: enough for co-visits and sequence rules."""
        return max(self.covisit_recent, self.sequence_steps, self.sequence_sources)


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded, validated event. ``shard``: which shard's statistics it teaches (the Kafka
    partition of its user); ``text_vec``: the embedded text of a search, if any."""

    user_id: str
    event_id: str
    event_type: str
    ts: float
    item_id: str | None = None
    value: float | None = None
    rec_id: str | None = None
    text_vec: npt.NDArray[np.float32] | None = None
    shard: int = 0


@dataclass
class Request:
    """A user's snapshot after event `event_id`, to be ranked. ``feedback``: (item, sign,
    rec_id) of that event; ``probe``: an item whose signals this snapshot must also give (the
    user's next event is feedback on it)."""

    user_id: str
    event_id: str | None
    shard: int
    inputs: SignalInputs
    evidence: dict[str, float]
    publish: bool
    feedback: tuple[str, int, str | None] | None = None
    probe: str | None = None
    #: The user's recent distinct items (oldest first): the sequence model's input.
    items: tuple[str, ...] = ()


@dataclass
class RecList:
    """A published list. Per item, contributions add up to the score."""

    user_id: str
    rec_id: str
    as_of_event_id: str | None
    as_of_ts: float
    ranker: str
    items: list[RankedItem]
    weights: dict[str, float]
    top_interests: list[dict[str, float | str]]
    bounds: dict[str, list[float]] | None
    #: Catalogue rows of the candidate pool the list was cut from (not on the wire: for the
    #: evaluation's candidate recall); empty for the popularity ranker.
    pool: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Version of the sequence-model snapshot the list used (None: none yet).
    model_version: int | None = None

    def to_dict(self, titles: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The wire shape of a list (streams/records.py Recommendation), without `ts`."""
        return {
            "user_id": self.user_id,
            "rec_id": self.rec_id,
            "ranker": self.ranker,
            "as_of": {"event_id": self.as_of_event_id, "ts": self.as_of_ts},
            "items": [
                {
                    "item_id": r.item_id,
                    "score": r.score,
                    "title": (titles or {}).get(r.item_id) or None,
                    "contributions": r.contributions,
                    "signals": r.signals or None,
                }
                for r in self.items
            ],
            "weights": self.weights,
            "top_interests": self.top_interests,
            "signal_bounds": self.bounds,
            "model_version": self.model_version,
        }


@dataclass
class Applied:
    """What `apply` returns: every user it touched, the requests in event order, one delta
    per shard, the ids of duplicates skipped and (event_id, reason) of events refused."""

    states: dict[str, UserRecord] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    deltas: dict[int, SharedDelta] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    applied: int = 0

    def delta(self, shard: int) -> SharedDelta:
        if shard not in self.deltas:
            self.deltas[shard] = SharedDelta(shard)
        return self.deltas[shard]


def rec_id_for(user_id: str, event_id: str | None) -> str:
    """A deterministic list id per (user, as-of event): a replay re-sends the same id."""
    return hashlib.blake2b(f"{user_id}\x00{event_id}".encode(), digest_size=16).hexdigest()


def rec_seed(user_id: str, event_id: str | None) -> int:
    """A deterministic exploration seed per (user, event): replays serve the same list."""
    return zlib.crc32(f"{user_id}\x00{event_id}".encode())


class Recommender:
    """The engine over one catalogue and one replica of the shared statistics."""

    def __init__(self, params: EngineParams, catalog: Catalog, shared: SharedStats) -> None:
        if params.interest.dim != catalog.dim:
            raise ConfigError(
                f"interest vectors have {params.interest.dim} dimensions, the catalogue "
                f"{catalog.dim}: build EngineParams with InterestParams(dim={catalog.dim})"
            )
        self.params = params
        self.catalog = catalog
        self.shared = shared
        self.eta = EtaSchedule(params.eta, params.eta_tau)
        self.eta_global = EtaSchedule(params.eta_global, params.eta_tau)
        self.pop_rate = decay.decay_rate(params.popularity_half_life_s)
        self.fresh_rate = decay.decay_rate(params.freshness_half_life_s)
        self.covisit_rate = decay.decay_rate(params.covisit_half_life_s)
        self.sequence_rate = decay.decay_rate(params.sequence_half_life_s)
        self._centroids: tuple[int, list[str], npt.NDArray[np.float32] | None] | None = None
        self._gw_memo: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
        self._model: ModelSignal | None = None

    def use_model(self, snapshot: Snapshot | None, device: str | None = None) -> None:
        """Serve the sequence-model signal from `snapshot` from the next batch on (None: the
        signal is absent again). SnapshotError, and the current model kept, when it does not
        fit this catalogue."""
        self._model = None if snapshot is None else ModelSignal(snapshot, self.catalog, device)

    @property
    def model_version(self) -> int | None:
        return None if self._model is None else self._model.version

    def new_state(self) -> UserRecord:
        return UserRecord.new(self.params.interest, len(SIGNAL_NAMES))

    # --- apply ---------------------------------------------------------------------------------
    def apply(
        self,
        states: Mapping[str, UserRecord | None],
        events: Sequence[Event],
        lists: ListPolicy = "every",
    ) -> Applied:
        """Fold `events` (in order) into the users' states; snapshot each user after each.

        `states` are taken over (updated in place and returned in `Applied.states`). lists:
        "every" publishes a list after every applied event, "last" one per user (after its last
        event in the batch), "none" only learns (and takes no snapshot of a user never served
        a list: its feedback has no list to teach about). A duplicate event (id already applied)
        changes nothing; an event the state refuses (RecstreamError) is reported in
        `rejected` and changes nothing.
        """
        out = Applied()
        last: dict[str, Request] = {}
        consumed: dict[str, list[int]] = {}
        # Users who can give no feedback in this batch: only learning ("none"), and no list
        # served to them before. A state-only worker then snapshots and ranks nothing.
        mute: set[str] = set()
        prior = self._category_prior()
        for ev in events:
            rec = out.states.get(ev.user_id) or states.get(ev.user_id) or self.new_state()
            if rec.interest.has_seen(ev.event_id):
                out.duplicates.append(ev.event_id)
                continue
            if ev.user_id not in out.states:
                upgraded(rec, len(SIGNAL_NAMES))
                out.states[ev.user_id] = rec
                if lists == "none" and not rec.served:
                    mute.add(ev.user_id)
                consumed[ev.user_id] = [] if ev.user_id in mute else self._consumed_rows(rec)
            sign = self._sign(ev)
            if sign and ev.item_id and ev.user_id not in last and ev.user_id not in mute:
                # The first event of the batch is feedback: its item needs signals as of the
                # state before the batch (a snapshot that publishes nothing).
                pre = self._snapshot(ev.user_id, rec, None, ev.shard, consumed, prior)
                pre.publish = False
                out.requests.append(pre)
                last[ev.user_id] = pre
            try:
                self._learn(rec, ev, out.delta(ev.shard), consumed[ev.user_id])
            except RecstreamError as exc:
                out.rejected.append((ev.event_id, str(exc)))
                continue
            out.applied += 1
            if ev.user_id in mute:
                continue
            if sign and ev.item_id:
                last[ev.user_id].probe = ev.item_id
            req = self._snapshot(ev.user_id, rec, ev.event_id, ev.shard, consumed, prior)
            req.publish = lists == "every"
            req.feedback = (ev.item_id, sign, ev.rec_id) if sign and ev.item_id else None
            out.requests.append(req)
            last[ev.user_id] = req
        if lists == "last":
            for req in last.values():
                req.publish = req.event_id is not None
        return out

    @staticmethod
    def _sign(ev: Event) -> int:
        """Feedback sign of an event on an item; 0 for events that carry none (a search that
        names an item) or that the state will refuse (reported by `_learn`)."""
        if ev.item_id is None:
            return 0
        try:
            return feedback_sign(ev.event_type, ev.value)
        except RecstreamError:
            return 0

    def _learn(self, rec: UserRecord, ev: Event, delta: SharedDelta, consumed: list[int]) -> None:
        p = self.params
        row = self.catalog.row_of.get(ev.item_id) if ev.item_id else None
        item_vec = None if row is None else self.catalog.vector(ev.item_id or "")
        cats = () if row is None else self.catalog.categories[row]
        rec.interest.update(
            InterestEvent(ev.event_id, ev.event_type, ev.ts, ev.item_id, ev.value),
            item_vec=item_vec,
            categories=cats,
            text_vec=ev.text_vec,
            text_categories=self._text_categories(ev.text_vec),
        )
        if row is not None and ev.event_type in p.interest.consumed_event_types:
            consumed.append(row)
        weight = p.interest.weight_of(ev.event_type, ev.value)
        if ev.item_id is not None and weight > 0:
            self._learn_next(rec, ev.item_id, ev.ts, delta)
            for inc in pair_increments(
                rec.recent[-p.covisit_recent :],
                ev.item_id,
                ev.ts,
                window_s=p.covisit_window_s,
                gap_half_life_s=p.covisit_window_s / 2,
            ):
                term = decay.log_term(inc.weight, inc.ts, self.covisit_rate)
                delta.add_pair(inc.item_id, inc.neighbour_id, term)
            delta.add_popularity(ev.item_id, decay.log_term(weight, ev.ts, self.pop_rate))
            recent = [(i, t) for i, t in rec.recent if i != ev.item_id]
            rec.recent = [*recent, (ev.item_id, ev.ts)][-p.recent_kept :]
        if weight > 0 and cats:
            rec.window_short.add(ev.ts, cats, p.window_short_s, p.window_short_step_s)
            rec.window_long.add(ev.ts, cats, p.window_long_s, p.window_long_step_s)

    def _learn_next(self, rec: UserRecord, item_id: str, ts: float, delta: SharedDelta) -> None:
        """The sequential rules (previous items → `item_id`) of a positive consumption."""
        p = self.params
        for pair in next_pairs(
            rec.recent, item_id, ts, window_s=p.sequence_window_s, max_steps=p.sequence_steps
        ):
            term = decay.log_term(pair.strength, pair.ts, self.sequence_rate)
            delta.add_next(pair.source, pair.following, term)

    def _snapshot(
        self,
        user_id: str,
        rec: UserRecord,
        event_id: str | None,
        shard: int,
        consumed: Mapping[str, list[int]],
        prior: Mapping[str, float],
    ) -> Request:
        st = rec.interest
        at = st.last_ts if st.event_count else 0.0
        evidence = st.evidence(at) if st.event_count else {}
        total = self.params.posterior_alpha0 + sum(evidence.get(c, 0.0) for c in prior)
        mean = {
            c: (self.params.posterior_alpha0 * pi + evidence.get(c, 0.0)) / total
            for c, pi in prior.items()
        }
        zero = np.zeros(st.dim, dtype=np.float32)
        inputs = SignalInputs(
            short=st.score_vector("short", at) if st.event_count else zero,
            long=st.score_vector("long", at) if st.event_count else zero,
            at_ts=at,
            recent=tuple(rec.recent[-self.params.covisit_recent :]),
            history=tuple(rec.recent[-self.params.sequence_sources :]),
            exclude=np.unique(np.asarray(consumed[user_id], dtype=np.int64)),
            category_mean=mean,
        )
        items = tuple(i for i, _ in rec.recent)
        return Request(user_id, event_id, shard, inputs, evidence, publish=False, items=items)

    def _consumed_rows(self, rec: UserRecord) -> list[int]:
        get = self.catalog.row_of_key.get
        rows = (get(int(k)) for k in rec.interest.consumed_keys())
        return [r for r in rows if r is not None]

    def _category_prior(self) -> dict[str, float]:
        """category → share of catalogue items (the Dirichlet prior's base measure)."""
        sizes = {c: len(rows) for c, rows in self.catalog.category_rows().items()}
        total = sum(sizes.values())
        return {c: n / total for c, n in sorted(sizes.items())} if total else {}

    def _text_categories(self, text_vec: npt.NDArray[np.float32] | None) -> dict[str, float] | None:
        if text_vec is None:
            return None
        labels, matrix = self._category_centroids()
        if matrix is None:
            return None
        shares = category_evidence_from_text(text_vec, matrix)
        return dict(zip(labels, (float(x) for x in shares), strict=True))

    def _category_centroids(self) -> tuple[list[str], npt.NDArray[np.float32] | None]:
        """Mean item vector per category (unit rows), recomputed when the catalogue changes."""
        cat = self.catalog
        if self._centroids is None or self._centroids[0] != cat.version:
            labels, rows = [], []
            for c, members in sorted(cat.category_rows().items()):
                idx = np.asarray(members, dtype=np.int64)
                idx = idx[cat.has_vector[idx]]
                mean = cat.vectors[idx].mean(axis=0) if idx.size else None
                if mean is not None and float(np.linalg.norm(mean)) > 0:
                    labels.append(c)
                    rows.append(mean / np.linalg.norm(mean))
            matrix = np.vstack(rows).astype(np.float32) if rows else None
            self._centroids = (cat.version, labels, matrix)
        return self._centroids[1], self._centroids[2]

    # --- rank ----------------------------------------------------------------------------------
    def rank(self, applied: Applied) -> list[RecList]:
        """Lists for the published requests of `applied`, in event order; feedback moves the
        users' weights (and each shard's global copy, carried in that shard's delta).

        Two passes. A walk in event order applies feedback and fixes each list's weights: the
        η update needs the consumed item's signal row and the softmax-weighted mean row of the
        pool of the list it answers (under that list's weights), which that list's pool gives
        before the list is ranked. Then the lists are
        fused, cut and diversified together. With ``feedback_baseline="served"`` μ is the
        served list itself, so the walk first ranks the lists staged so far."""
        reqs = applied.requests
        if not reqs:
            return []
        sig = self._batch_signals(reqs)
        self._gw_memo.clear()  # the shards' copies move from batch to batch
        arms = self._arm_order(sig.ctx) if self.params.exploration_share > 0 else None
        walk = BatchWalk(reqs, sig, applied.states, arms, self.params.served_kept)
        for i, req in enumerate(reqs):
            rec = applied.states[req.user_id]
            if req.feedback is not None:
                self._feedback(rec, req, walk.probes.pop(req.user_id, None), walk)
            if req.probe is not None and i in sig.probe_at:
                walk.probes[req.user_id] = (req.probe, i)
            if req.publish:
                walk.stage(i, self._list_weights(req, rec, walk.own))
        self._rank_staged(walk)
        lists = [walk.lists[i] for i in sorted(walk.lists)]
        latest = {lst.user_id: lst for lst in lists}  # one conversion per user and batch
        for user_id, lst in latest.items():
            applied.states[user_id].last_list = lst.to_dict(None)
        for shard, ws in walk.own.items():  # only the shards whose copy feedback moved
            applied.delta(shard).weights = ws.weights.tolist()
        return lists

    def _list_weights(
        self, req: Request, rec: UserRecord, own: dict[int, WeightState]
    ) -> npt.NDArray[np.float64] | None:
        """The fusion weights of `req`'s list as of now (None for the popularity ranker)."""
        if self.params.ranker != FUSED:
            return None
        return rec.weights.effective(self._global_for(req.shard, own), self.params.weight_shrinkage)

    def _batch_signals(self, reqs: Sequence[Request]) -> BatchSignals:
        """Candidates and signals of every request at once (weights do not enter here)."""
        p = self.params
        ctx = BatchContext.build(self.catalog, self.shared, 2 * p.candidates_per_source)
        publish = [i for i, r in enumerate(reqs) if r.publish]
        sem = semantic_scores(self.catalog, [reqs[i].inputs for i in publish])
        covs, seqs = self._neighbour_signals(reqs)
        pools = [np.zeros(0, dtype=np.int64)] * len(reqs)
        sem_rows: dict[int, npt.NDArray[np.float32]] = {}
        if p.ranker == FUSED:
            rank = self.catalog.id_rank()
            tops = semantic_tops(
                sem, [reqs[i].inputs for i in publish], self.catalog, 2 * p.candidates_per_source
            )
        model = self._model_scores(reqs)
        for j, i in enumerate(publish):
            sem_rows[i] = sem[j]
            if p.ranker == FUSED:
                pools[i] = candidate_pool(
                    sem[j], tops[j], covs[i], ctx, rank, p.candidates_per_source,
                    seqs[i], p.sequence_candidates,
                )  # fmt: skip
                if model is not None and model[0][i] >= 0:
                    pools[i] = self._with_model_rows(pools[i], model[1][model[0][i]], sem[j])
        probe_at: dict[int, int] = {}
        probe_rows: list[int] = []
        for i, r in enumerate(reqs):
            row = self.catalog.row_of.get(r.probe) if r.probe else None
            if row is not None:
                probe_at[i] = len(probe_rows)
                probe_rows.append(row)
        sizes = [x.size for x in pools]
        offsets = np.cumsum([0, *sizes]).astype(np.int64)
        rows = np.concatenate([*pools, np.asarray(probe_rows, dtype=np.int64)])
        owner = np.concatenate(
            [np.repeat(np.arange(len(reqs)), sizes), np.asarray(list(probe_at), dtype=np.int64)]
        ).astype(np.int64)
        raw = raw_signals(
            rows, owner, [r.inputs for r in reqs], covs, ctx, self.catalog,
            pop_rate=self.pop_rate, fresh_rate=self.fresh_rate, sequences=seqs,
        )  # fmt: skip
        if model is not None:
            raw[:, SASREC] = model_column(model[1], model[0], rows, owner)
        n = int(offsets[-1])
        lo, hi = segment_bounds(raw[:n], offsets)
        norm = normalise_segments(raw[:n], lo, hi, owner[:n])
        return BatchSignals(
            ctx, sem_rows, pools, offsets, raw[:n], lo, hi, raw[n:], probe_at, rows[:n], norm
        )

    def _model_scores(
        self, reqs: Sequence[Request]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None:
        """(per request its row in the scores or −1, scores[needing, catalogue rows]) of the
        requests that need the model signal (a list or a probe): one forward pass."""
        if self._model is None or self.params.ranker != FUSED:
            return None
        need = [i for i, r in enumerate(reqs) if r.publish or r.probe is not None]
        at = np.full(len(reqs), -1, dtype=np.int64)
        at[need] = np.arange(len(need))
        return at, self._model.scores(self.catalog, [reqs[i].items for i in need])

    def _with_model_rows(
        self, pool: IntArray, scores: npt.NDArray[np.float32], sem: npt.NDArray[np.float32]
    ) -> IntArray:
        """`pool` and, after it, the model's top rows that are not in it yet."""
        n = self.params.sasrec_candidates
        if n <= 0:
            return pool
        top = model_candidates(scores, sem, n, self.catalog.id_rank())
        seen = np.zeros(self.catalog.rows, dtype=bool)  # a mask: np.isin sorts both arrays
        seen[pool] = True
        return np.concatenate([pool, top[~seen[top]]]).astype(np.int64)

    def _neighbour_signals(self, reqs: Sequence[Request]) -> tuple[list[CoVisits], list[CoVisits]]:
        """Per request, its co-visit and sequence scores (empty where no list or probe needs
        them, and for the popularity ranker)."""
        p = self.params
        covs, seqs = [], []
        for r in reqs:
            if (r.publish or r.probe is not None) and p.ranker == FUSED:
                inputs = r.inputs
                covs.append(covisit_scores(self.shared, self.catalog, inputs.recent, inputs.at_ts))
                seqs.append(
                    sequence_scores(
                        self.shared,
                        self.catalog,
                        inputs.history,
                        inputs.at_ts,
                        n_last=p.sequence_sources,
                        gap_half_life_s=p.sequence_gap_half_life_s,
                    )
                )
            else:
                covs.append(CoVisits.empty())
                seqs.append(CoVisits.empty())
        return covs, seqs

    def _weights_for(self, own: dict[int, WeightState], shard: int) -> WeightState:
        if shard not in own:
            start = self.shared.shard_weights.get(shard)
            own[shard] = (
                WeightState.uniform(len(SIGNAL_NAMES)) if start is None else (WeightState(start))
            )
        return own[shard]

    def _global_for(self, shard: int, own: dict[int, WeightState]) -> npt.NDArray[np.float64]:
        """The global weights as `shard` sees them now. A shard's copy enters the mean only
        once feedback has moved it (as from its first delta on): shards without feedback do
        not pull the weights to uniform. Memoised per (shard, updates of its copy): the mean
        over every shard's copy is the same for all of a batch's requests in between."""
        moved = own.get(shard)
        stamp = (shard, -1 if moved is None else moved.n)
        hit = self._gw_memo.get(stamp)
        if hit is None:
            hit = self.shared.global_weights(shard, None if moved is None else moved.weights)
            self._gw_memo[stamp] = hit
        return hit

    def _feedback(
        self,
        rec: UserRecord,
        req: Request,
        probe: tuple[str, int] | None,
        walk: BatchWalk,
    ) -> None:
        assert req.feedback is not None
        item_id, sign, rec_id = req.feedback
        ref = walk.served_ref(req.user_id, rec_id)
        if isinstance(ref, int) and walk.waits_for_lists(self.params):
            self._rank_staged(walk)
            ref = walk.served.get(ref)
        if ref is None:
            return
        if isinstance(ref, int):
            found = self._pool_feedback(walk, ref, item_id, probe)
        else:
            found = self._served_feedback(walk.sig, ref, item_id, probe)
        if found is None:
            return
        d, mu = found
        if rec.weights.update(d, mu, self.eta, sign=sign):
            self._weights_for(walk.own, req.shard).update(d, mu, self.eta_global, sign=sign)

    def _served_feedback(
        self, sig: BatchSignals, served: ServedList, item_id: str, probe: tuple[str, int] | None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """(d, μ) from a list as served (a batch before this one's, or any with the
        "served" baseline); None when it cannot teach."""
        if not served.items:
            return None
        if self.params.feedback_baseline == "pool" and served.pool_mean is not None:
            mu = np.asarray(served.pool_mean, dtype=np.float64)
        else:
            mu = np.mean(np.asarray(list(served.items.values()), dtype=np.float64), axis=0)
        if item_id in served.items:
            return np.asarray(served.items[item_id], dtype=np.float64), mu
        if probe is not None and probe[0] == item_id:
            return normalise_with(sig.probe_row(probe[1]), served.lo, served.hi), mu
        return None  # the item was not in the catalogue when the list was served

    def _pool_feedback(
        self, walk: BatchWalk, k: int, item_id: str, probe: tuple[str, int] | None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """(d, μ) for feedback on request k's list of this batch, from its pool: μ the walk's
        `pool_mean` of that list, d the item's row in it (the row the list served, or would
        have), else the probe's row under the list's bounds. None for an empty pool."""
        sig = walk.sig
        mu = walk.pool_mean(k, self.params.feedback_temperature)
        if mu is None:
            return None
        a = int(sig.offsets[k])
        row = self.catalog.row_of.get(item_id)
        at = np.flatnonzero(sig.pools[k] == row) if row is not None else None
        if at is not None and at.size:
            return sig.norm[a + int(at[0])], mu
        if probe is not None and probe[0] == item_id:
            return normalise_with(sig.probe_row(probe[1]), sig.lo[k], sig.hi[k]), mu
        return None

    def _rank_staged(self, walk: BatchWalk) -> None:
        """Rank every list the walk has staged, together."""
        idx, walk.pending = walk.pending, []
        if not idx:
            return
        if self.params.ranker == POPULARITY:
            for i in idx:
                walk.lists[i] = self._popular_list(walk.reqs[i], walk.sig, i)
            return
        fused = self._fuse_staged(walk.sig, idx, walk.weights)
        for j, i in enumerate(idx):
            walk.lists[i] = self._fused_list(walk, i, fused, j)

    def _fuse_staged(
        self, sig: BatchSignals, idx: Sequence[int], weights: Mapping[int, npt.NDArray[np.float64]]
    ) -> StagedFusion:
        """Scores of the staged lists' candidates, each list's MMR picks among its best."""
        p = self.params
        at = np.asarray(idx, dtype=np.int64)
        starts, ends = sig.offsets[at], sig.offsets[at + 1]
        sizes = ends - starts
        pos = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])
        seg = np.repeat(np.arange(at.size), sizes)
        w = np.asarray([weights[i] for i in idx], dtype=np.float64)
        if not np.all(np.isfinite(sig.norm[pos])):  # as fuse: MMR would repeat a NaN row
            raise ValidationError("normalised signals contain NaN or infinite entries")
        scores, contributions = fuse_rows(sig.norm[pos], w[seg])
        tops = top_per_segment(scores, sizes, p.k * p.mmr_pool)
        chosen = self._mmr_staged(sig, at, tops, scores, pos)
        return StagedFusion(pos, scores, contributions, chosen)

    def _mmr_staged(
        self,
        sig: BatchSignals,
        at: IntArray,
        tops: npt.NDArray[np.intp],
        scores: npt.NDArray[np.float64],
        pos: IntArray,
    ) -> list[IntArray]:
        """Per staged list, the positions (into the staged rows) it shows, in order."""
        p = self.params
        n_top = (tops >= 0).sum(axis=1)
        chosen = [tops[j, : min(p.k, int(n))] for j, n in enumerate(n_top.tolist())]
        diverse = np.flatnonzero(n_top > 1) if p.mmr_trade_off < 1.0 else np.zeros(0, np.int64)
        if not diverse.size:
            return chosen
        width = tops.shape[1]
        rel = np.zeros((diverse.size, width))
        sims = np.zeros((diverse.size, width, width))
        for d, j in enumerate(diverse.tolist()):
            n, top = int(n_top[j]), tops[j, : n_top[j]]
            # float64: a float32 product rounds differently with the arrays' alignment and
            # shape, and MMR's near-ties would then pick differently in the two runners.
            vecs = self.catalog.vectors[sig.rows_at(pos[top])].astype(np.float64)
            sims[d, :n, :n] = vecs @ vecs.T
            rel[d, :n] = scores[top]
        picks = mmr_select_batch(rel, sims, n_top[diverse], p.k, p.mmr_trade_off)
        for d, j in enumerate(diverse.tolist()):
            got = picks[d]
            chosen[j] = tops[j][got[got >= 0]]
        return chosen

    def _fused_list(self, walk: BatchWalk, i: int, fused: StagedFusion, j: int) -> RecList:
        p, sig, req = self.params, walk.sig, walk.reqs[i]
        rec = walk.states[req.user_id]
        rec_id = rec_id_for(req.user_id, req.event_id)
        items = self._ranked_items(sig, fused, j)
        if walk.arms is not None:
            items = self._explore(items, req, walk.arms)
        bounds = {"lo": sig.lo[i].tolist(), "hi": sig.hi[i].tolist()}
        mu = walk.pool_mean(i, p.feedback_temperature) if p.feedback_baseline == "pool" else None
        served = ServedList(
            rec_id,
            {r.item_id: [r.signals[n] for n in SIGNAL_NAMES] for r in items if r.signals},
            bounds["lo"],
            bounds["hi"],
            None if mu is None else mu.tolist(),
        )
        rec.served = [*rec.served, served][-p.served_kept :]
        walk.served[i] = served
        weights = dict(zip(SIGNAL_NAMES, walk.weights[i].tolist(), strict=True))
        return RecList(
            req.user_id, rec_id, req.event_id, req.inputs.at_ts, p.ranker, items, weights,
            top_interests(req.evidence, 3), bounds, sig.pools[i], self.model_version,
        )  # fmt: skip

    def _ranked_items(self, sig: BatchSignals, fused: StagedFusion, j: int) -> list[RankedItem]:
        chosen = fused.chosen[j]
        ids = self.catalog.ids
        # One conversion per list rather than per item: this runs for every list.
        rows = sig.rows_at(fused.pos[chosen]).tolist()
        return [
            RankedItem(
                ids[r],
                s,
                dict(zip(SIGNAL_NAMES, c, strict=True)),
                dict(zip(SIGNAL_NAMES, n, strict=True)),
            )
            for r, s, c, n in zip(
                rows,
                fused.scores[chosen].tolist(),
                fused.contributions[chosen].tolist(),
                sig.norm[fused.pos[chosen]].tolist(),
                strict=True,
            )
        ]

    def _arm_order(self, ctx: BatchContext) -> ArmOrder | None:
        """Each category's most popular rows (ties by item id), for exploration; enough of
        them that a user's consumed items rarely exhaust an arm."""
        rank = self.catalog.id_rank()
        by_category = self.catalog.category_rows()
        if not by_category:
            return None
        depth = 10 * self.params.arm_items
        labels, parts = [], []
        for c, rows in sorted(by_category.items()):
            arr = np.asarray(rows, dtype=np.int64)
            labels.append(c)
            parts.append(arm_rows(arr, ctx.pop_lm[arr], rank[arr], depth))
        prior = self._category_prior()
        share = np.array([prior.get(c, 0.0) for c in labels], dtype=np.float64)
        nonempty = np.array([r.size > 0 for r in parts], dtype=bool)
        return ArmOrder(tuple(labels), parts, prior, share, nonempty)

    def _explore(self, ranked: list[RankedItem], req: Request, arms: ArmOrder) -> list[RankedItem]:
        p = self.params
        evidence = np.array([req.evidence.get(c, 0.0) for c in arms.labels], dtype=np.float64)
        alpha = p.posterior_alpha0 * arms.share + evidence
        total = sum(alpha.tolist())  # left to right, as the posterior has always summed
        beta = total - alpha
        live = np.flatnonzero(arms.nonempty & (alpha > 0) & (beta > 0))
        if not live.size:
            return ranked
        ids, exclude = self.catalog.ids, req.inputs.exclude
        items = FreeArms(arms.rows, live.tolist(), exclude, ids, p.arm_items)
        generator = np.random.default_rng(rec_seed(req.user_id, req.event_id or ""))
        return allocate_from_posteriors(
            ranked, alpha[live], beta[live], items, p.exploration_share, p.k, generator
        )

    def _popular_list(self, req: Request, sig: BatchSignals, i: int) -> RecList:
        items = self._popular_items(req, sig.sem_rows[i], sig.ctx)
        return RecList(
            req.user_id, rec_id_for(req.user_id, req.event_id), req.event_id, req.inputs.at_ts,
            self.params.ranker, items, {POPULARITY: 1.0}, top_interests(req.evidence, 3), None,
            sig.pools[i], self.model_version,
        )  # fmt: skip

    def _popular_items(
        self, req: Request, sem: npt.NDArray[np.float32], ctx: BatchContext
    ) -> list[RankedItem]:
        live = np.where(np.isfinite(sem), ctx.pop_lm, -np.inf)
        best = top_rows(live, self.params.k, self.catalog.id_rank())
        scores = np.exp(np.minimum(ctx.pop_lm[best] - self.pop_rate * req.inputs.at_ts, 700.0))
        return [
            RankedItem(self.catalog.ids[int(r)], float(s), {POPULARITY: float(s)})
            for r, s in zip(best, scores, strict=True)
        ]


@dataclass(frozen=True)
class BatchSignals:
    """A batch's candidates and signals. Request i's candidates are ``pools[i]`` with raw
    signals ``raw[offsets[i]:offsets[i+1]]`` and per-signal bounds ``lo[i]``, ``hi[i]``;
    ``probe_raw[probe_at[i]]`` is the raw signal row of request i's probed item."""

    ctx: BatchContext
    sem_rows: dict[int, npt.NDArray[np.float32]]
    pools: list[IntArray]
    offsets: IntArray
    raw: npt.NDArray[np.float64]
    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    probe_raw: npt.NDArray[np.float64]
    probe_at: dict[int, int]
    #: The catalogue row of each candidate (the pools concatenated, aligned with ``raw``).
    rows: IntArray
    #: ``raw`` normalised with each request's bounds (normalise_with, per request).
    norm: npt.NDArray[np.float64]

    def rows_at(self, positions: npt.ArrayLike) -> IntArray:
        """The catalogue rows of candidate positions (into ``raw``)."""
        return np.asarray(self.rows[np.asarray(positions, dtype=np.intp)], dtype=np.int64)

    def probe_row(self, i: int) -> npt.NDArray[np.float64]:
        """The raw signal row of request i's probed item."""
        return self.probe_raw[self.probe_at[i]]


@dataclass(frozen=True)
class StagedFusion:
    """The staged lists' fusion: per candidate (positions into ``BatchSignals.raw`` in
    ``pos``) its score and contributions; per list the candidates it shows, in order, as
    indices into these arrays."""

    pos: IntArray
    scores: npt.NDArray[np.float64]
    contributions: npt.NDArray[np.float64]
    chosen: list[IntArray]


@dataclass
class BatchWalk:
    """One batch's walk in event order: the shards' moved weight copies, each user's pending
    probe (item, request index), the lists staged (with their weights) and ranked, and per
    user the served lists feedback may name: those of earlier batches (`UserRecord.served`)
    and this batch's (request indices), the last `served_kept` of them."""

    reqs: Sequence[Request]
    sig: BatchSignals
    states: Mapping[str, UserRecord]
    arms: ArmOrder | None
    served_kept: int
    own: dict[int, WeightState] = field(default_factory=dict)
    probes: dict[str, tuple[str, int]] = field(default_factory=dict)
    weights: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)
    lists: dict[int, RecList] = field(default_factory=dict)
    served: dict[int, ServedList] = field(default_factory=dict)
    refs: dict[str, list[ServedList | int]] = field(default_factory=dict)
    means: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)

    def pool_mean(self, i: int, temperature: float) -> npt.NDArray[np.float64] | None:
        """μ of request i's list: `pool_baseline` of its pool under the weights it was staged
        with (fixed from then on), computed once for the list's own ServedList and for
        feedback on it later in the batch. None for an empty pool."""
        if i not in self.means:
            a, b = int(self.sig.offsets[i]), int(self.sig.offsets[i + 1])
            if b == a:
                return None
            self.means[i] = pool_baseline(self.sig.norm[a:b], self.weights.get(i), temperature)
        return self.means[i]

    def stage(self, i: int, weights: npt.NDArray[np.float64] | None) -> None:
        """Request i's list is to be ranked with `weights` (None: no served list, the
        popularity ranker)."""
        self.pending.append(i)
        if weights is not None:
            self.weights[i] = weights
            refs = self._refs(self.reqs[i].user_id)
            refs.append(i)
            del refs[: -self.served_kept]

    def served_ref(self, user_id: str, rec_id: str | None) -> ServedList | int | None:
        """The served list `rec_id` names, else the user's latest (None: none served), as
        `UserRecord.served_list` finds it."""
        refs = self._refs(user_id)
        for ref in refs:
            if isinstance(ref, ServedList):
                if ref.rec_id == rec_id:
                    return ref
            elif rec_id_for(user_id, self.reqs[ref].event_id) == rec_id:
                return ref
        return refs[-1] if refs else None

    def waits_for_lists(self, params: EngineParams) -> bool:
        """Whether feedback on a list of this batch needs the list ranked first: μ is the
        served list's mean, or exploration may take every slot (a list without fused
        items teaches nothing)."""
        slots = exploration_slots(params.exploration_share, params.k)
        return params.feedback_baseline == "served" or (self.arms is not None and slots >= params.k)

    def _refs(self, user_id: str) -> list[ServedList | int]:
        if user_id not in self.refs:
            self.refs[user_id] = list(self.states[user_id].served)
        return self.refs[user_id]


class FreeArms(Sequence[list[str]]):
    """Per live arm, its first `limit` item ids not banned, resolved on first read: a list
    explores one or two arms, so resolving every arm's items (or building an object per
    arm) for every list would be wasted work."""

    def __init__(
        self, rows: list[IntArray], live: list[int], exclude: IntArray, ids: list[str], limit: int
    ):
        """`rows`: every arm's rows; `live`: the arms offered, in order; `exclude`: rows the
        list may not show, sorted ascending (np.unique's order)."""
        self._args = (rows, live, exclude, ids, limit)
        self._memo: dict[int, list[str]] = {}

    def _resolved(self, i: int) -> list[str]:
        hit = self._memo.get(i)
        if hit is None:
            rows, live, exclude, ids, limit = self._args
            arm = rows[live[i]]
            if exclude.size:
                pos = np.minimum(np.searchsorted(exclude, arm), exclude.size - 1)
                arm = arm[exclude[pos] != arm]
            hit = self._memo[i] = [ids[r] for r in arm[:limit].tolist()]
        return hit

    def __len__(self) -> int:
        return len(self._args[1])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._resolved(j) for j in range(len(self))[i]]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._resolved(i % len(self))


@dataclass(frozen=True)
class ArmOrder:
    """Exploration arms of a batch: per category label its rows, most popular first, and
    the Dirichlet prior's base measure."""

    labels: tuple[str, ...]
    rows: list[IntArray]
    prior: dict[str, float]
    share: npt.NDArray[np.float64]  # the prior per label, in label order
    nonempty: npt.NDArray[np.bool_]  # per label: the arm has rows


def arm_rows(rows: IntArray, pop: npt.NDArray[np.float64], rank: IntArray, n: int) -> IntArray:
    """The first `n` of `rows` by popularity (descending; −inf: none), ties by id rank: the
    order a full sort by (−pop, rank) gives, without sorting every row of a large category."""
    best = rows[top_rows(pop, n, rank)]
    if best.size < n:  # then every row with a popularity is in; the rest follow by id
        rest = np.flatnonzero(~np.isfinite(pop))
        best = np.concatenate([best, rows[rest[np.argsort(rank[rest], kind="stable")]]])[:n]
    return np.asarray(best, dtype=np.int64)


def upgraded(rec: UserRecord, k: int) -> UserRecord:
    """`rec` (in place) for `k` signals: a record written before a signal was appended to the
    registry gets weight 0 for it (WeightState.resized), and its served lists, whose signal
    rows are shorter, are dropped (feedback on them is skipped; the next list has k)."""
    if rec.weights.k < k:
        rec.weights = rec.weights.resized(k)
        rec.served = [s for s in rec.served if len(s.lo) == k]
    return rec


def top_interests(evidence: Mapping[str, float], n: int) -> list[dict[str, float | str]]:
    """The `n` strongest categories by decayed evidence, with their shares."""
    positive = {c: m for c, m in evidence.items() if m > 0}
    total = sum(positive.values())
    if total <= 0:
        return []
    best = sorted(positive.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"category": c, "share": m / total} for c, m in best]
