"""`recstream eval`: prequential evaluation of the live pipeline against in-process baselines.

The data set (MovieLens or the synthetic generator) is replayed through real worker processes
and the real broker (see `recstream.evaluation.replay`); every published list is collected.
Scoring follows `recstream.evaluation.prequential`: a target (positive consumption) of a user is
scored against the list reflecting exactly that user's previous event. Baselines
(`recstream.evaluation.baselines`) run in this process on the same event sequence with the same
protocol: learn each event, and right after it predict for the user when their next event is a
target.

Outputs in the chosen folder: metrics.json, report.md and PNG plots.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from recstream.config.settings import Settings
from recstream.evaluation.baselines import DecayedPopularity, ItemKNNCoVisit, Recommender
from recstream.evaluation.metrics import percentiles
from recstream.evaluation.prequential import (
    ScoreCard,
    align,
    interest_from_top,
    is_target,
    prediction_points,
    recovery_after_switch,
    slice_edges,
    slice_index,
    total_variation,
)
from recstream.evaluation.replay import PROBE_PREFIX, CollectedList, ReplayResult, replay
from recstream.models.errors import DatasetError, RecstreamError

K = 10
RECALL_K = 20
N_SLICES = 10
#: Default flow-control window of the replay, per worker (see run_eval).
DEFAULT_IN_FLIGHT_PER_WORKER = 16
SYSTEM_UNDER_TEST = "recstream"
#: Size of the synthetic world `recstream eval --dataset synthetic` generates.
SYNTHETIC_DEFAULTS = {"n_items": 500, "n_users": 100, "events_per_user": 100}


@dataclass
class EvalData:
    """A data set in the wire format, in replay (time) order."""

    name: str
    items: list[dict[str, Any]]
    events: list[dict[str, Any]]
    views_are_targets: bool
    synthetic: Any = None  # SyntheticDataset for synthetic data


def load_data(dataset: str, limit: int | None, seed: int) -> EvalData:
    """`synthetic` (the generator with SYNTHETIC_DEFAULTS and `seed`) or a MovieLens folder.

    `limit` keeps the first `limit` events in time order; the catalogue is always whole.
    """
    if dataset == "synthetic":
        from recstream.evaluation.synthetic import SyntheticConfig, generate

        data = generate(SyntheticConfig(seed=seed, **SYNTHETIC_DEFAULTS))  # type: ignore[arg-type]
        events = [dict(e) for e in data.events]
        if limit is not None:
            events = events[:limit]
        # Synthetic views are drawn from the user's interest exactly like clicks: positives.
        return EvalData("synthetic", [dict(i) for i in data.items], events, True, data)
    from recstream.evaluation.movielens import load_movielens

    path = Path(dataset)
    if not path.exists():
        raise DatasetError(f"no such data set folder: {path} (or pass 'synthetic')")
    ml_items, ml_events = load_movielens(path, limit=limit)
    # MovieLens "view" is a middling 2.5–3.5 star rating, not a positive consumption.
    return EvalData(path.name, [dict(i) for i in ml_items], [dict(e) for e in ml_events], False)


# --- item vectors ------------------------------------------------------------------------------
def item_vectors(
    settings: Settings, items: Sequence[Mapping[str, Any]], worker_caches: Sequence[Path]
) -> tuple[dict[str, np.ndarray] | None, str]:
    """Item id → unit vector with the pipeline's encoder and item-text template.

    Vectors the workers already computed are read from their embedding caches (RocksDB, key
    `text_key(model_id, text)`, float32 bytes) so the catalogue is not encoded twice; the rest
    are encoded here. Returns (vectors or None, a sentence for the report).
    """
    try:
        from recstream.agents.embedding import encoder_from_settings
        from recstream.models.item_text import item_text, text_key

        encoder = encoder_from_settings(settings)
    except Exception as exc:  # any failure means: no encoder, skip the baseline
        return None, f"the text encoder could not be loaded ({exc!r})"

    texts = {
        str(i["item_id"]): item_text(
            i.get("title"),
            i.get("categories"),
            i.get("text"),
            i.get("attributes"),
            settings.item_text_attributes,
        )
        for i in items
    }
    keys = {item: text_key(encoder.model_id, text) for item, text in texts.items()}
    vectors: dict[str, np.ndarray] = {}
    for cache in worker_caches:
        if not cache.is_dir():
            continue
        try:
            from rocksdict import AccessType, Rdict

            db = Rdict(str(cache), access_type=AccessType.read_only())
        except Exception:  # an unreadable cache only costs encoding time
            continue
        try:
            for item, key in keys.items():
                if item not in vectors:
                    raw = db.get(key.encode("utf-8"))
                    if raw is not None:
                        vectors[item] = np.frombuffer(raw, dtype=np.float32)
        finally:
            db.close()
    from_cache = len(vectors)
    todo = [item for item in texts if item not in vectors and texts[item]]
    if todo:
        encoded, valid = encoder.encode_with_mask([texts[i] for i in todo])
        for item, vec, ok in zip(todo, encoded, valid, strict=True):
            if ok:
                vectors[item] = vec
    source = (
        f"{encoder.model_id}: {from_cache} item vectors read from the workers' embedding cache, "
        f"{len(todo)} encoded here; {len(items) - len(vectors)} items without text"
    )
    return (vectors or None), source


# --- scoring -----------------------------------------------------------------------------------
def _consumed_rule(settings: Settings) -> tuple[frozenset[str], int]:
    """What the worker excludes from a user's lists: items of recent non-search events."""
    from recstream.models.interest_state import DEFAULT_CONSUMED_EVENT_TYPES

    return frozenset(DEFAULT_CONSUMED_EVENT_TYPES), settings.max_consumed


def run_baselines(
    events: Sequence[Mapping[str, Any]],
    models: Mapping[str, Recommender],
    target: Callable[[Mapping[str, Any]], bool],
    *,
    settings: Settings,
    item_users: Mapping[str, int],
    n_users: int,
    vectors: Mapping[str, np.ndarray] | None,
    console: Console,
) -> tuple[dict[str, ScoreCard], dict[str, ScoreCard]]:
    """Prequential scores (warm, cold start) of in-process baselines on `events`.

    Same protocol as the pipeline: the prediction scored for a target is computed right after
    the user's previous event was learned; items are excluded like the worker excludes them
    (the user's last `max_consumed` non-search items). A user's first event, when a target, is
    scored separately (cold start) with the model's prediction just before learning it.
    """
    consumed_types, max_consumed = _consumed_rule(settings)
    points = prediction_points(events, target)
    warm = {name: ScoreCard(K, RECALL_K) for name in models}
    cold = {name: ScoreCard(K, RECALL_K) for name in models}
    pending: dict[str, dict[str, list[str]]] = {name: {} for name in models}
    consumed: dict[str, dict[str, None]] = defaultdict(dict)
    seen_users: set[str] = set()

    def score(card: ScoreCard, ranked: list[str] | None, event: Mapping[str, Any]) -> None:
        """Score one target event against `ranked` (None: no prediction was stored)."""
        card.add(
            str(event["user_id"]), float(event["ts"]), ranked, str(event["item_id"]),
            item_users=item_users, n_users=n_users, vectors=vectors,
            case_id=str(event["event_id"]),
        )  # fmt: skip

    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("baselines", total=len(events))
        for i, event in enumerate(events):
            user, ts = str(event["user_id"]), float(event["ts"])
            item = event.get("item_id")
            if target(event):
                assert item is not None
                if user in seen_users:
                    for name in models:
                        score(warm[name], pending[name].pop(user, None), event)
                else:
                    for name, model in models.items():
                        score(cold[name], model.predict_one(user, ts, RECALL_K, exclude=()), event)
            for model in models.values():
                model.learn_one(event)
            seen_users.add(user)
            if item is not None and event.get("event_type") in consumed_types:
                window = consumed[user]
                window.pop(item, None)  # re-insert: the most recent goes last
                window[item] = None
                if len(window) > max_consumed:
                    del window[next(iter(window))]
            if points[i]:
                exclude = frozenset(consumed[user])
                for name, model in models.items():
                    pending[name][user] = model.predict_one(user, ts, RECALL_K, exclude=exclude)
            if i % 500 == 499:
                progress.update(task, completed=i + 1)
        progress.update(task, completed=len(events))
    return warm, cold


def score_pipeline(
    events: Sequence[Mapping[str, Any]],
    lists: Sequence[CollectedList],
    target: Callable[[Mapping[str, Any]], bool],
    *,
    item_users: Mapping[str, int],
    n_users: int,
    vectors: Mapping[str, np.ndarray] | None,
) -> tuple[ScoreCard, int]:
    """(warm-start scores of the published lists, number of cold-start targets)."""
    card = ScoreCard(K, RECALL_K)
    cold = 0
    for case in align(events, lists, key=lambda r: (r.user_id, r.event_id)):
        event = case.event
        if not target(event):
            continue
        if case.cold_start:
            cold += 1
            continue
        ranked = None if case.prediction is None else list(case.prediction.items)
        card.add(
            str(event["user_id"]),
            float(event["ts"]),
            ranked,
            str(event["item_id"]),
            item_users=item_users,
            n_users=n_users,
            vectors=vectors,
            case_id=str(event["event_id"]),
        )
    return card, cold


# --- synthetic extras --------------------------------------------------------------------------
def _switch_offsets(
    events: Sequence[Mapping[str, Any]], switch_times: Mapping[str, float]
) -> dict[str, int | None]:
    """event_id → for users who switch: None before the switch, else the user's events at or
    after the switch time that came before this one (0: the first event after the switch)."""
    out: dict[str, int | None] = {}
    after: Counter[str] = Counter()
    for e in events:
        user = str(e["user_id"])
        tau = switch_times.get(user)
        if tau is None:
            continue
        if float(e["ts"]) < tau:
            out[str(e["event_id"])] = None
        else:
            out[str(e["event_id"])] = after[user]
            after[user] += 1
    return out


def synthetic_extras(
    data: EvalData,
    lists: Sequence[CollectedList],
    cards: Mapping[str, ScoreCard],
    edges: Sequence[float],
) -> dict[str, Any]:
    """Interest-estimate distance to the truth, and recovery after abrupt switches.

    TV distance: for every list of a dataset user with `top_interests`, the estimate is the
    listed shares with the rest spread evenly over the unlisted topics
    (`interest_from_top`), compared with `true_interest(user, as_of.ts)`. Two references on the
    same lists: `uniform` (no knowledge) and `counts` (shares of topics among the user's positive
    events so far, truncated to the same number of categories as the list).
    Recovery: `recovery_after_switch` over the cases of users with an abrupt switch, for every
    system, with rolling windows of 10 events and an 80% threshold.
    """
    ds = data.synthetic
    topics = list(ds.topics)
    uniform = np.full(len(topics), 1.0 / len(topics))
    offsets = _switch_offsets(data.events, ds.switch_times)

    # Reference estimator from counts, evaluated at every event (lists are matched by event id).
    item_topic = ds.item_topic
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    counts_at: dict[str, list[tuple[str, float]]] = {}
    for e in data.events:
        user = str(e["user_id"])
        item = e.get("item_id")
        if item is not None and is_target(e, views_are_targets=True):
            counts[user][item_topic[item]] += 1
        c = counts[user]
        total = sum(c.values())
        counts_at[str(e["event_id"])] = (
            [(t, n / total) for t, n in c.most_common()] if total else []
        )

    rows: list[tuple[str, float, float, float, float, int | None]] = []
    seen: set[str] = set()
    skipped = 0
    for rec in lists:
        if rec.event_id in seen or rec.user_id.startswith(PROBE_PREFIX):
            continue
        seen.add(rec.event_id)
        estimate = interest_from_top(rec.top_interests, topics)
        if estimate is None:
            skipped += 1
            continue
        truth = ds.true_interest(rec.user_id, rec.as_of_ts)
        n_top = len(rec.top_interests)
        reference = interest_from_top(counts_at.get(rec.event_id, [])[:n_top], topics)
        rows.append(
            (
                rec.user_id,
                rec.as_of_ts,
                total_variation(estimate, truth),
                total_variation(uniform, truth),
                total_variation(reference, truth) if reference is not None else math.nan,
                offsets.get(rec.event_id),
            )
        )
    tv = np.asarray([r[2] for r in rows])
    tv_uniform = np.asarray([r[3] for r in rows])
    tv_counts = np.asarray([r[4] for r in rows])
    ts = np.asarray([r[1] for r in rows])
    which = slice_index(ts, edges) if len(ts) else np.asarray([], dtype=int)
    by_slice = [
        {
            "start_ts": edges[i],
            "end_ts": edges[i + 1],
            "n": int((which == i).sum()),
            "tv": _mean(tv[which == i]),
            "tv_counts": _mean(tv_counts[which == i]),
        }
        for i in range(len(edges) - 1)
    ]
    switch_rows = [r for r in rows if r[0] in ds.switch_times]
    tv_by_offset: dict[str, list[float]] = defaultdict(list)
    for r in switch_rows:
        key = "pre" if r[5] is None else str(min(int(r[5]) // 10 * 10, 50))
        tv_by_offset[key].append(r[2])

    recovery: dict[str, Any] = {}
    for name, card in cards.items():
        cases = [
            (offsets[cid], hit)
            for cid, hit in zip(card.ids, card.hit, strict=True)
            if cid in offsets
        ]
        rec_ = recovery_after_switch(cases, window=10, fraction=0.8)
        recovery[name] = {
            "pre_switch_hr@10": rec_.pre_hr,
            "post_switch_dip_hr@10": rec_.dip_hr,
            "events_to_recover_80pct": rec_.recovery_events,
            "pre_switch_cases": sum(1 for o, _ in cases if o is None),
            "post_switch_cases": sum(1 for o, _ in cases if o is not None),
            "curve": [{"offset": o, "hr@10": h, "n": n} for o, h, n in rec_.curve],
        }
    return {
        "interest_tv": {
            "lists": len(rows),
            "lists_without_interests": skipped,
            "mean": _mean(tv),
            "mean_uniform_reference": _mean(tv_uniform),
            "mean_counts_reference": _mean(tv_counts),
            "by_slice": by_slice,
            "switch_users_by_offset": {
                k: {"mean": _mean(np.asarray(v)), "n": len(v)}
                for k, v in sorted(tv_by_offset.items(), key=lambda kv: (kv[0] != "pre", kv[0]))
            },
        },
        "switch_users": len(ds.switch_times),
        "recovery": recovery,
        "_rows": rows,  # for the plots; dropped before writing metrics.json
    }


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)] if values.size else values
    return float(values.mean()) if values.size else math.nan


def write_lists(path: Path, lists: Sequence[CollectedList]) -> None:
    """Every collected list (compact: ids, not full items), one JSON object per line, gzipped,
    so that scores can be recomputed or inspected without replaying again."""
    import dataclasses
    import gzip

    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for rec in lists:
            fh.write(json.dumps(dataclasses.asdict(rec)) + "\n")


# --- report ------------------------------------------------------------------------------------
def code_version() -> str | None:
    """`<commit>` or `<commit>+dirty` of the repository the package runs from (read-only git)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, memory and software versions of this machine."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "code": code_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_plots(
    out_dir: Path,
    metrics: dict[str, Any],
    result: ReplayResult,
    extras: dict[str, Any] | None,
    data: EvalData,
) -> list[str]:
    """PNG plots (matplotlib, Agg); returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    # 1. HR@10 per time slice and system.
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, rows in metrics["slices"]["systems"].items():
        mids = [(r["start_ts"] + r["end_ts"]) / 2 for r in rows]
        hrs = [r[f"hr@{K}"] if r[f"hr@{K}"] is not None else math.nan for r in rows]
        days = [(m - mids[0]) / 86_400 for m in mids] if mids else []
        ax.plot(days, hrs, marker="o", label=name, lw=2.5 if name == SYSTEM_UNDER_TEST else 1.2)
    ax.set_xlabel("event time (days since the first slice's centre)")
    ax.set_ylabel(f"HR@{K}")
    ax.set_title(f"HR@{K} per event-time slice ({data.name})")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "hr_over_time.png")

    # 2. Latency histogram.
    lat = result.latencies_ms()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if lat.size:
        ax.hist(lat, bins=60, color="tab:blue", alpha=0.8)
        for p, style in ((50, "-"), (95, "--"), (99, ":")):
            v = float(np.percentile(lat, p))
            ax.axvline(v, color="black", ls=style, label=f"p{p} {v:,.0f} ms")
        ax.legend()
    ax.set_xlabel("event → list latency (ms, Kafka record timestamps)")
    ax.set_ylabel("lists")
    ax.set_title(f"Publish latency, {result.n_events} events, {len(result.worker_logs)} worker(s)")
    save(fig, "latency_hist.png")

    # 3. Weight trajectories of the users with the most lists.
    per_user: dict[str, list[CollectedList]] = defaultdict(list)
    for rec in result.lists:
        per_user[rec.user_id].append(rec)
    top_users = sorted(per_user, key=lambda u: (-len(per_user[u]), u))[:4]
    if top_users:
        fig, axes = plt.subplots(len(top_users), 1, figsize=(8, 2.4 * len(top_users)), sharex=False)
        axes = np.atleast_1d(axes)
        for ax, user in zip(axes, top_users, strict=True):
            recs = sorted(per_user[user], key=lambda r: r.as_of_ts)
            names = sorted({k for r in recs for k in r.weights})
            x = list(range(len(recs)))
            for name in names:
                ax.plot(x, [r.weights.get(name, math.nan) for r in recs], label=name)
            ax.set_title(f"user {user}: weights per list", fontsize=9)
            ax.set_ylabel("weight")
            ax.legend(fontsize=7, ncol=3)
        axes[-1].set_xlabel("the user's n-th list")
        save(fig, "weights.png")

    if extras is None:
        return written
    ds = data.synthetic
    topics = list(ds.topics)

    # 4. Estimated vs true interest for a few users (switchers first).
    users = sorted(ds.switch_times)[:2] + sorted(ds.drift_users)[:1]
    users += [u for u in sorted(per_user) if u not in users and not u.startswith(PROBE_PREFIX)]
    users = [u for u in users if u in per_user][:3]
    if users:
        fig, axes = plt.subplots(len(users), 1, figsize=(8, 2.8 * len(users)))
        axes = np.atleast_1d(axes)
        for ax, user in zip(axes, users, strict=True):
            recs = sorted(per_user[user], key=lambda r: r.as_of_ts)
            ts = np.asarray([r.as_of_ts for r in recs])
            truth = np.asarray([ds.true_interest(user, t) for t in ts])
            est = np.asarray(
                [
                    e
                    if (e := interest_from_top(r.top_interests, topics)) is not None
                    else np.full(len(topics), math.nan)
                    for r in recs
                ]
            )
            strongest = np.argsort(-truth.max(axis=0))[:3]
            days = (ts - ts[0]) / 86_400
            for j, k in enumerate(strongest):
                color = f"C{j}"
                ax.plot(days, truth[:, k], color=color, lw=2, label=f"{topics[k]} true")
                ax.plot(days, est[:, k], color=color, ls="--", label=f"{topics[k]} estimated")
            tau = ds.switch_times.get(user)
            if tau is not None and ts[0] <= tau <= ts[-1]:
                ax.axvline((tau - ts[0]) / 86_400, color="black", ls=":", label="switch")
            ax.set_title(f"user {user}: true vs estimated topic share", fontsize=9)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7, ncol=3)
        axes[-1].set_xlabel("event time (days since the user's first list)")
        save(fig, "interest_vs_truth.png")

    # 5. Recovery after abrupt switches.
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for j, (name, rec) in enumerate(extras["recovery"].items()):
        curve = rec["curve"]
        if not curve:
            continue
        ax.plot(
            [c["offset"] for c in curve],
            [c["hr@10"] for c in curve],
            color=f"C{j}",
            label=name,
            lw=2.5 if name == SYSTEM_UNDER_TEST else 1.2,
        )
        if rec["pre_switch_hr@10"] is not None and math.isfinite(rec["pre_switch_hr@10"]):
            ax.axhline(rec["pre_switch_hr@10"], color=f"C{j}", ls=":", lw=1)
    ax.set_xlabel("events after the switch (window start; rolling 10 events)")
    ax.set_ylabel(f"HR@{K} (pooled over switching users)")
    ax.set_title("Recovery after abrupt interest switches (dotted: pre-switch HR)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no scored case after a switch", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    save(fig, "switch_recovery.png")
    return written


def _pacing(run: Mapping[str, Any]) -> str:
    """How the replay was paced, in words."""
    parts = []
    if run.get("rate"):
        parts.append(f"paced at {run['rate']} events/s")
    if run.get("max_in_flight"):
        parts.append(f"at most {run['max_in_flight']} events in flight (sent, no list yet)")
    return " and ".join(parts) or "as fast as possible, with no flow control (a backlog forms)"


def write_report(out_dir: Path, metrics: dict[str, Any], plots: Sequence[str]) -> None:
    """report.md: what was measured, the tables, the machine."""
    m = metrics
    ds, run = m["dataset"], m["run"]
    lines = [
        f"# recstream evaluation: {ds['name']}",
        "",
        f"{ds['events']} events of {ds['users']} users over a catalogue of {ds['items']} items "
        f"were replayed in event-time order through {run['workers']} worker process(es) and "
        f"the Kafka broker at {m['settings']['bootstrap']} (throwaway topics, debounce 0, "
        f"top_k {m['settings']['top_k']}). The pipeline published with ranker(s) "
        f"{', '.join(f'`{k}` ({v} lists)' for k, v in run['rankers'].items())}; it appears as "
        f"`{SYSTEM_UNDER_TEST}` below.",
        "",
        "## Protocol",
        "",
        f"- Prequential: a target event k of a user is scored against the list whose "
        f"`as_of.event_id` is the user's event k−1 (computed before event k existed). Targets: "
        f"{m['protocol']['targets']}.",
        f"- HR@{K}, NDCG@{K} on the first {K} items; Recall@{RECALL_K} and MRR on the first "
        f"{RECALL_K} (one target per case, so Recall@{RECALL_K} = HR@{RECALL_K}). Coverage: "
        f"distinct items in the scored top-{K} lists / catalogue. Novelty: mean −log2(share of "
        f"the replay's users who interacted with the item anywhere in the replay) over the top "
        f"{K}. ILD: mean pairwise cosine distance of the top {K} item vectors (the pipeline's "
        "encoder and item-text template).",
        "- Baselines run in-process on the same sequence with the same protocol; items are "
        "excluded as the worker excludes them (the user's recent non-search items).",
        f"- A user's first event has no list before it (cold start): {m['cold_start']['targets']} "
        "targets, reported separately.",
        "",
        "## Accuracy (warm start)",
        "",
        f"| system | HR@{K} | NDCG@{K} | Recall@{RECALL_K} | MRR | coverage | novelty (bits) "
        "| ILD | cases |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in m["systems"].items():
        lines.append(
            f"| {name} | {_fmt(s[f'hr@{K}'])} | {_fmt(s[f'ndcg@{K}'])} | "
            f"{_fmt(s[f'recall@{RECALL_K}'])} | {_fmt(s['mrr'])} | {_fmt(s['coverage'])} | "
            f"{_fmt(s['novelty'], 2)} | {_fmt(s['ild'], 3)} | {s['n']} |"
        )
    for name, why in m["skipped_systems"].items():
        lines.append(f"| {name} | skipped: {why} |  |  |  |  |  |  |  |")
    if m["systems"][SYSTEM_UNDER_TEST].get("missing"):
        lines.append("")
        lines.append(
            f"{m['systems'][SYSTEM_UNDER_TEST]['missing']} cases had no list reflecting the "
            "previous event (scored as misses)."
        )
    cold = m["cold_start"]
    lines += [
        "",
        f"## Cold start ({cold['targets']} targets, {_fmt(cold['share'], 3)} of all targets)",
        "",
        f"`{SYSTEM_UNDER_TEST}`: {cold[SYSTEM_UNDER_TEST]}",
        "",
        f"| baseline | HR@{K} | NDCG@{K} | MRR |",
        "|---|---|---|---|",
    ]
    for name, s in cold["systems"].items():
        lines.append(
            f"| {name} | {_fmt(s[f'hr@{K}'])} | {_fmt(s[f'ndcg@{K}'])} | {_fmt(s['mrr'])} |"
        )
    lat = m["latency_ms"]
    lines += [
        "",
        "## Latency and throughput",
        "",
        f"- event → list latency (Kafka record timestamps, first list per event, {lat['n']} "
        f"lists): p50 {_fmt(lat['p50'], 0)} ms, p95 {_fmt(lat['p95'], 0)} ms, p99 "
        f"{_fmt(lat['p99'], 0)} ms.",
        f"- throughput: {_fmt(m['throughput_eps'], 1)} events/s = events / (first event sent → "
        f"last list received, {_fmt(run['span_s'], 1)} s).",
        f"- events were sent in {_fmt(run['send_s'], 1)} s, {_pacing(run)}. Latency includes "
        "the time an event waits behind the events in flight before it; `recstream bench "
        "pipeline --rate R` measures latency at a sustained rate.",
        f"- worker start-up (group stable, catalogue ingested, probes answered): "
        f"{_fmt(run['startup_s'], 1)} s; lists for {run['unreflected']} events never arrived.",
    ]
    for note in run["notes"]:
        lines.append(f"- note: {note}")
    lines += [
        "",
        f"## Per time slice (HR@{K}, {N_SLICES} equal event-time slices)",
        "",
        "| slice | " + " | ".join(m["slices"]["systems"]) + " |",
        "|---|" + "---|" * len(m["slices"]["systems"]),
    ]
    first = next(iter(m["slices"]["systems"].values()))
    for i in range(len(first)):
        row = [_fmt(rows[i][f"hr@{K}"], 3) for rows in m["slices"]["systems"].values()]
        lines.append(f"| {i} (n={first[i]['n']}) | " + " | ".join(row) + " |")
    syn = m.get("synthetic")
    if syn:
        tv = syn["interest_tv"]
        lines += [
            "",
            "## Synthetic ground truth",
            "",
            f"Total-variation distance between the lists' `top_interests` (listed shares, the "
            f"rest spread evenly over unlisted topics) and the true interest at `as_of.ts`, over "
            f"{tv['lists']} lists ({tv['lists_without_interests']} had no interests): mean "
            f"**{_fmt(tv['mean'], 3)}**; uniform guess {_fmt(tv['mean_uniform_reference'], 3)}; "
            f"topic counts of the user's positive events (same truncation) "
            f"{_fmt(tv['mean_counts_reference'], 3)}.",
            "",
            "TV for switching users by events since the switch: "
            + ", ".join(
                f"{k}: {_fmt(v['mean'], 3)} (n={v['n']})"
                for k, v in tv["switch_users_by_offset"].items()
            ),
            "",
            f"Recovery after abrupt switches ({syn['switch_users']} users; rolling HR@{K} over "
            "windows of 10 events after the switch, pooled over users; recovered at the first "
            "window start whose HR reaches 80% of the pooled pre-switch HR):",
            "",
            "| system | pre-switch HR (cases) | HR in first 10 events after | events to recover "
            "80% | post-switch cases |",
            "|---|---|---|---|---|",
        ]
        for name, r in syn["recovery"].items():
            lines.append(
                f"| {name} | {_fmt(r['pre_switch_hr@10'], 3)} ({r['pre_switch_cases']}) | "
                f"{_fmt(r['post_switch_dip_hr@10'], 3)} | {_fmt(r['events_to_recover_80pct'])} | "
                f"{r['post_switch_cases']} |"
            )
    mach = m["machine"]
    lines += [
        "",
        "## Machine",
        "",
        f"{mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable), "
        f"{mach['memory_gib']} GiB; Python {mach['python']}; {mach['platform']}. The broker "
        f"and all workers ran on this machine. Code: {mach['code'] or 'unknown'}.",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", f"Settings of the run are in metrics.json (`settings`). {m['vectors']}", ""]
    (out_dir / "report.md").write_text("\n".join(lines))


# --- orchestration -----------------------------------------------------------------------------
def run_eval(
    settings: Settings,
    dataset: str,
    out_dir: Path,
    limit: int | None = None,
    workers: int = 1,
    seed: int = 0,
    console: Console | None = None,
    *,
    rate: float | None = None,
    max_in_flight: int | None = None,
    fixed_weights: bool = True,
) -> dict[str, Any]:
    """Replay `dataset` through the pipeline, score it and the baselines, write the outputs.

    Args:
        settings: base settings (broker, partitions, ranker knobs); the run uses throwaway
            topics, debounce 0 and top_k >= 20 on top of them.
        dataset: "synthetic" or a MovieLens folder (latest-small or 100K layout).
        out_dir: receives metrics.json, report.md, PNG plots and the worker logs.
        limit: replay only the first `limit` events (time order); None: all.
        workers: worker processes.
        seed: seed of the synthetic generator.
        rate: events per second to send (None: as fast as possible).
        max_in_flight: events sent but not yet reflected by a list, at most (None: 16 per
            worker; 0: unlimited, the whole data set may queue up). Under a backlog lists are
            computed long after their event and shared state (popularity, co-visits) lags, so a
            bounded window measures the pipeline as it behaves live.
        fixed_weights: also replay the same events through a second pipeline whose fusion
            weights never move (η = η_global = 0: every user keeps the uniform start weights),
            scored as the `fixed_weights` system. It isolates what the η rule adds, with
            everything else (candidates, signals, MMR, exploration) identical. Doubles the
            replay time; only with the fused ranker.

    Returns:
        The metrics dict written to metrics.json.
    """
    console = console or Console(stderr=True)
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(dataset, limit, seed)
    if not data.events:
        raise DatasetError("no events to replay")
    console.print(
        f"[bold]{data.name}[/bold]: {len(data.items)} items, {len(data.events)} events, "
        f"{len({e['user_id'] for e in data.events})} users"
    )
    in_flight = DEFAULT_IN_FLIGHT_PER_WORKER * workers if max_in_flight is None else max_in_flight

    def run_pipeline(work_dir: Path, **overrides: Any) -> ReplayResult:
        return replay(
            settings,
            data.items,
            data.events,
            workers=workers,
            work_dir=work_dir,
            rate=rate,
            max_in_flight=in_flight,
            console=console,
            overrides=overrides,
            embedding_cache=settings.home / "eval-cache" / "embedding-cache",
        )

    result = run_pipeline(out_dir)
    fixed_result = None
    if fixed_weights and settings.ranker == "fused":
        console.print("[bold]fixed_weights[/bold]: the same replay with η = η_global = 0")
        fixed_result = run_pipeline(out_dir / "fixed_weights", eta=0.0, eta_global=0.0)
    if not result.lists:
        raise RecstreamError(f"no list arrived; see {result.worker_logs}")
    rankers = Counter(r.ranker for r in result.lists)
    console.print(f"collected {len(result.lists)} lists (rankers: {dict(rankers)})")

    def target(event: Mapping[str, Any]) -> bool:
        return is_target(event, views_are_targets=data.views_are_targets)

    item_users_sets: dict[str, set[str]] = defaultdict(set)
    for e in data.events:
        if e.get("item_id") is not None:
            item_users_sets[e["item_id"]].add(e["user_id"])
    item_users = {i: len(u) for i, u in item_users_sets.items()}
    n_users = len({e["user_id"] for e in data.events})

    with console.status("item vectors ..."):
        caches = [p.parent / p.stem / "embedding-cache" for p in result.worker_logs]
        vectors, vector_source = item_vectors(settings, data.items, caches)
    console.print(f"item vectors: {vector_source}")
    # The workers' RocksDB folders can be large and are not needed any more; logs stay.
    for log in [*result.worker_logs, *(fixed_result.worker_logs if fixed_result else [])]:
        shutil.rmtree(log.parent / log.stem, ignore_errors=True)

    pipeline_card, n_cold = score_pipeline(
        data.events, result.lists, target, item_users=item_users, n_users=n_users, vectors=vectors
    )
    models: dict[str, Recommender] = {
        "popularity": DecayedPopularity(half_life_s=settings.popularity_half_life_s),
        "item_knn": ItemKNNCoVisit(),
    }
    skipped: dict[str, str] = {}
    if vectors:
        from recstream.evaluation.baselines import StaticEmbeddingSimilarity

        models["static_embedding"] = StaticEmbeddingSimilarity(vectors)
    else:
        skipped["static_embedding"] = vector_source
    fixed_card = None
    if fixed_result is not None:
        if fixed_result.lists:
            fixed_card, _ = score_pipeline(
                data.events,
                fixed_result.lists,
                target,
                item_users=item_users,
                n_users=n_users,
                vectors=vectors,
            )
        else:
            skipped["fixed_weights"] = f"no list arrived; see {fixed_result.worker_logs}"
    elif settings.ranker != "fused":
        skipped["fixed_weights"] = f"the ranker under test is {settings.ranker!r}, not fused"
    else:
        skipped["fixed_weights"] = "turned off (--no-fixed-weights)"
    warm, cold = run_baselines(
        data.events,
        models,
        target,
        settings=settings,
        item_users=item_users,
        n_users=n_users,
        vectors=vectors,
        console=console,
    )
    cards = {SYSTEM_UNDER_TEST: pipeline_card, **warm}
    if fixed_card is not None:
        cards["fixed_weights"] = fixed_card
    catalog_size = len(data.items)
    systems: dict[str, Any] = {name: card.summary(catalog_size) for name, card in cards.items()}
    top_ranker = rankers.most_common(1)[0][0]
    systems[SYSTEM_UNDER_TEST]["ranker"] = top_ranker
    edges = slice_edges(pipeline_card.ts, N_SLICES)
    n_targets = sum(1 for e in data.events if target(e))
    lat = result.latencies_ms()
    pct = percentiles(lat.tolist(), (50, 95, 99))

    metrics: dict[str, Any] = {
        "dataset": {
            "name": data.name,
            "source": dataset,
            "events": len(data.events),
            "users": n_users,
            "items": catalog_size,
            "targets": n_targets,
            "limit": limit,
            "seed": seed if data.synthetic is not None else None,
        },
        "protocol": {
            "targets": (
                "click, add_to_cart, purchase, rate with value >= 4"
                + (
                    ", view (synthetic views are drawn from the true interest)"
                    if data.views_are_targets
                    else "; MovieLens 'view' (2.5-3.5 stars) is not"
                )
            ),
            "k": K,
            "recall_k": RECALL_K,
            "scored_list": "the list reflecting the user's previous event",
        },
        "systems": systems,
        "skipped_systems": skipped,
        "latency_ms": {
            "p50": pct[50],
            "p95": pct[95],
            "p99": pct[99],
            "mean": _mean(lat),
            "n": int(lat.size),
        },
        "throughput_eps": result.events_per_s,
        "lists_per_s": result.lists_per_s,
        "cold_start": {
            "targets": n_cold,
            "share": n_cold / n_targets if n_targets else math.nan,
            SYSTEM_UNDER_TEST: "not scored: no list exists before a user's first event",
            "systems": {name: c.summary(catalog_size) for name, c in cold.items()},
        },
        "slices": {
            "edges": edges,
            "systems": {name: card.slices(edges) for name, card in cards.items()},
        },
        "run": {
            "workers": workers,
            "rate": rate,
            "max_in_flight": result.max_in_flight,
            "rankers": dict(rankers),
            "weights_keys": sorted({k for r in result.lists for k in r.weights}),
            "lists": len(result.lists),
            "unreflected": len(result.unreflected),
            "startup_s": result.startup_s,
            "send_s": result.send_s,
            "span_s": result.span_s,
            "notes": result.notes,
            "worker_logs": [str(p) for p in result.worker_logs],
        },
        "vectors": vector_source,
        "settings": result.settings.model_dump(mode="json"),
        "machine": machine_info(),
    }
    if fixed_result is not None:
        spreads = [
            max(r.weights.values()) - min(r.weights.values())
            for r in fixed_result.lists
            if r.weights
        ]
        metrics["run"]["fixed_weights"] = {
            "lists": len(fixed_result.lists),
            "unreflected": len(fixed_result.unreflected),
            "throughput_eps": fixed_result.events_per_s,
            # 0 when the weights really stayed uniform (the control is what it claims).
            "max_weight_spread": max(spreads, default=0.0),
        }
    extras = None
    if data.synthetic is not None:
        with console.status("synthetic ground truth ..."):
            extras = synthetic_extras(data, result.lists, cards, edges)
        metrics["synthetic"] = extras
    write_lists(out_dir / "lists.jsonl.gz", result.lists)
    plots = write_plots(out_dir, metrics, result, extras, data)
    metrics["run"]["eval_wall_s"] = time.monotonic() - started
    clean = _clean(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n")
    write_report(out_dir, clean, plots)
    return clean
