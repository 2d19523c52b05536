"""The PNG plots of an evaluation (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstream.evaluation.data import EvalData
from recstream.evaluation.prequential import interest_from_top
from recstream.evaluation.replay import PROBE_PREFIX, CollectedList, ReplayResult
from recstream.evaluation.scoring import SYSTEM_UNDER_TEST, K


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

    save(_hr_over_time(plt, metrics, data), "hr_over_time.png")
    save(_latency_hist(plt, result), "latency_hist.png")
    per_user: dict[str, list[CollectedList]] = defaultdict(list)
    for rec in result.lists:
        per_user[rec.user_id].append(rec)
    top_users = sorted(per_user, key=lambda u: (-len(per_user[u]), u))[:4]
    if top_users:
        save(_weights(plt, per_user, top_users), "weights.png")

    if extras is None:
        return written
    ds = data.synthetic
    # Estimated vs true interest for a few users (switchers first).
    users = sorted(ds.switch_times)[:2] + sorted(ds.drift_users)[:1]
    users += [u for u in sorted(per_user) if u not in users and not u.startswith(PROBE_PREFIX)]
    users = [u for u in users if u in per_user][:3]
    if users:
        save(_interest_vs_truth(plt, ds, per_user, users), "interest_vs_truth.png")
    save(_switch_recovery(plt, extras), "switch_recovery.png")
    return written


def _hr_over_time(plt: Any, metrics: Mapping[str, Any], data: EvalData) -> Any:
    """HR@10 per time slice and system."""
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
    return fig


def _latency_hist(plt: Any, result: ReplayResult) -> Any:
    """Histogram of event → list latency with its p50, p95, p99."""
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
    return fig


def _weights(
    plt: Any, per_user: Mapping[str, list[CollectedList]], top_users: Sequence[str]
) -> Any:
    """Weight trajectories of the users with the most lists."""
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
    return fig


def _interest_vs_truth(
    plt: Any, ds: Any, per_user: Mapping[str, list[CollectedList]], users: Sequence[str]
) -> Any:
    """Estimated vs true topic shares over time of a few users (synthetic data)."""
    topics = list(ds.topics)
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
    return fig


def _switch_recovery(plt: Any, extras: Mapping[str, Any]) -> Any:
    """Rolling HR after abrupt interest switches, per system (synthetic data)."""
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
    return fig
