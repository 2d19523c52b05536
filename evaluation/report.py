"""The outputs of an evaluation besides the plots: report.md, the collected lists, and the
JSON-safe metrics with a description of the machine and code version."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstream.evaluation.oracle import ORACLE
from recstream.evaluation.replay import CollectedList
from recstream.evaluation.scoring import N_SLICES, RECALL_K, SYSTEM_UNDER_TEST, K
from recstream.models.cpu_budget import usable_cpus


def write_lists(path: Path, lists: Sequence[CollectedList]) -> None:
    """Every collected list (compact: ids, not full items), one JSON object per line, gzipped,
    so that scores can be recomputed or inspected without replaying again. A list's candidate
    pool is written as its size only (the ids would multiply the file by ~10)."""
    import dataclasses
    import gzip

    names = [f.name for f in dataclasses.fields(CollectedList) if f.name != "candidates"]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for rec in lists:
            # Field by field, not dataclasses.asdict: that deep-copies every pool's shared map.
            row = {name: getattr(rec, name) for name in names}
            row["candidates"] = None if rec.candidates is None else len(rec.candidates)
            fh.write(json.dumps(row) + "\n")


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
    usable = usable_cpus()
    return {
        "code": code_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def clean_json(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
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
    sections = (
        _intro, _accuracy, _cold_start, _long_tail, _candidate_recall, _ablations,
        _model_timeline, _latency, _slices, _synthetic,
    )  # fmt: skip
    lines = [line for section in sections for line in section(metrics)]
    lines += _machine_and_plots(metrics, plots)
    (out_dir / "report.md").write_text("\n".join(lines))


def _intro(m: Mapping[str, Any]) -> list[str]:
    """Title, what was replayed, and the protocol."""
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
    ]
    return lines


def _accuracy(m: Mapping[str, Any]) -> list[str]:
    """Warm-start accuracy per system, and the skipped systems."""
    lines = [
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
    lines += _against_best_peer(m) + _ceiling(m)
    if m["systems"][SYSTEM_UNDER_TEST].get("missing"):
        lines.append("")
        lines.append(
            f"{m['systems'][SYSTEM_UNDER_TEST]['missing']} cases had no list reflecting the "
            "previous event (scored as misses)."
        )
    return lines


def _against_best_peer(m: Mapping[str, Any]) -> list[str]:
    """The system under test as a multiple of the best baseline, per metric, and the time
    slices (after the first) in which it is behind the best baseline of that slice."""
    best = m.get("best_peer")
    if not best:
        return []
    parts = [
        f"{metric.upper()} {_fmt(best[metric]['ratio'], 3)}× of `{best[metric]['peer']}`"
        for metric in (f"hr@{K}", f"ndcg@{K}")
        if best[metric]["ratio"] is not None
    ]
    behind = best["slices_behind"]
    named = f"slice{'s' * (len(behind) > 1)} {', '.join(map(str, behind))}"
    return [
        "",
        f"{SYSTEM_UNDER_TEST} against the best baseline: {', '.join(parts)}; behind the best "
        "baseline of the slice in " + (named if behind else "no slice") + " after the first.",
    ]


def _ceiling(m: Mapping[str, Any]) -> list[str]:
    """What the ground-truth oracle's row means, and how close the system under test is."""
    oracle, ours = m["systems"].get(ORACLE), m["systems"][SYSTEM_UNDER_TEST]
    if not oracle:
        return []
    shares = [
        f"{_fmt(ours[x] / oracle[x], 3)} of its {label}"
        for x, label in ((f"hr@{K}", f"HR@{K}"), (f"ndcg@{K}", f"NDCG@{K}"))
        if ours.get(x) is not None and oracle.get(x)
    ]
    return [
        "",
        f"`{ORACLE}` ranks by the generator's own probability of each item (the true topic "
        "interest at the list's time times the item's popularity within its topic): the "
        "ceiling of this protocol, not a peer. "
        + (f"{SYSTEM_UNDER_TEST} reaches {' and '.join(shares)}." if shares else ""),
    ]


def _cold_start(m: Mapping[str, Any]) -> list[str]:
    """Scores of the baselines on a user's first event."""
    cold = m["cold_start"]
    lines = [
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
    return lines


def _long_tail(m: Mapping[str, Any]) -> list[str]:
    """Scores of every system on the targets of rarely seen items."""
    tail = m.get("long_tail")
    if not tail:
        return []
    lines = [
        "",
        f"## Long tail ({tail['targets']} targets; {tail['scored']} warm cases, "
        f"{_fmt(tail['share'], 3)} of the warm cases)",
        "",
        f"Targets whose item had fewer than {tail['below']} earlier target events (replay order, "
        "any user; the target itself not counted). Warm cases only, so every system is scored "
        "on the same cases; a user's first event is the cold-start slice above.",
        "",
        f"| system | HR@{K} | NDCG@{K} | cases |",
        "|---|---|---|---|",
    ]
    for name, s in tail["systems"].items():
        lines.append(f"| {name} | {_fmt(s[f'hr@{K}'])} | {_fmt(s[f'ndcg@{K}'])} | {s['n']} |")
    return lines


def _candidate_recall(m: Mapping[str, Any]) -> list[str]:
    """Share of targets that were in the candidate pool of the scored list."""
    rec = m.get("candidate_recall")
    if not rec:
        return []
    lines = [
        "",
        "## Candidate recall",
        "",
        "Share of the scored targets whose item was in the candidate pool of the list the "
        "target is scored against (the pool the engine ranked; a missed candidate cannot be "
        "recommended by any fusion).",
        "",
    ]
    if not rec["available"]:
        return [*lines, f"`{SYSTEM_UNDER_TEST}`: {rec['note']}."]
    systems = rec["systems"]
    n_slices = len(next(iter(systems.values()))["by_slice"])
    lines += [
        "| system | overall | " + " | ".join(f"slice {i}" for i in range(n_slices)) + " |",
        "|---|---|" + "---|" * n_slices,
    ]
    for name, r in systems.items():
        row = [_fmt(v, 3) for v in r["by_slice"]]
        lines.append(f"| {name} | {_fmt(r['overall'], 4)} | " + " | ".join(row) + " |")
    return lines


def _ablations(m: Mapping[str, Any]) -> list[str]:
    """HR and NDCG with and without exploration and MMR (only when the run asked for them)."""
    abl = m.get("ablations")
    if abl is None:
        return []
    full = m["systems"][SYSTEM_UNDER_TEST]
    lines = [
        "",
        "## Ablations (in-process)",
        "",
        f"The same replay with one part of the ranking off; gain = `{SYSTEM_UNDER_TEST}` − "
        "ablation (positive: the part helps).",
        "",
        f"| system | overrides | HR@{K} | NDCG@{K} | HR@{K} gain | NDCG@{K} gain | replay s |",
        "|---|---|---|---|---|---|---|",
        f"| {SYSTEM_UNDER_TEST} | – | {_fmt(full[f'hr@{K}'])} | {_fmt(full[f'ndcg@{K}'])} "
        "| – | – | – |",
    ]
    for name, a in abl.items():
        overrides = ", ".join(f"{k}={v}" for k, v in a["overrides"].items())
        lines.append(
            f"| {name} | {overrides} | {_fmt(a[f'hr@{K}'])} | {_fmt(a[f'ndcg@{K}'])} | "
            f"{a[f'hr@{K}_gain']:+.4f} | {a[f'ndcg@{K}_gain']:+.4f} | {_fmt(a['wall_s'], 1)} |"
        )
    for name, why in m["skipped_systems"].items():
        if name in ("no_exploration", "no_mmr"):
            lines.append(f"| {name} | skipped: {why} |  |  |  |  |  |")
    return lines


def _model_timeline(m: Mapping[str, Any]) -> list[str]:
    """Which sequence-model version served which events."""
    timeline = m.get("model_timeline")
    if not timeline:
        return []
    lines = ["", "## Sequence model versions", ""]
    if m.get("run", {}).get("engine") == "inprocess":
        lines += [
            "In-process: each version was trained on the events before the first one it served.",
            "",
            "| version | first event served | trained on events | train s | loss |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {v['version']} | {v['first_event']} | {v['trained_events']} | "
            f"{_fmt(v['train_s'], 1)} | {_fmt(v['loss'], 3)} |"
            for v in timeline
        ]
        return lines
    lines += [
        "Through Kafka: the trainer ran beside the workers; a worker serves a version once its "
        "events are later than the ones it was trained on.",
        "",
        "| version | first event served | lists |",
        "|---|---|---|",
    ]
    lines += [f"| {v['version']} | {v['first_event']} | {v['lists']} |" for v in timeline]
    return lines


def _latency(m: Mapping[str, Any]) -> list[str]:
    """Latency, throughput, pacing and start-up of the replay."""
    run = m["run"]
    lat = m["latency_ms"]
    lines = [
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
    if run.get("concurrent_replays"):
        lines.append(
            "- the fixed-weights replay ran at the same time, on the same machine: these "
            "latencies and this throughput are those of a machine shared by two pipelines "
            "(`--serial-replays` measures one alone)."
        )
    for note in run["notes"]:
        lines.append(f"- note: {note}")
    return lines


def _slices(m: Mapping[str, Any]) -> list[str]:
    """HR per event-time slice and system."""
    lines = [
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
    return lines


def _synthetic(m: Mapping[str, Any]) -> list[str]:
    """The synthetic ground-truth section (empty for other data sets)."""
    lines: list[str] = []
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
    return lines


def _machine_and_plots(m: Mapping[str, Any], plots: Sequence[str]) -> list[str]:
    """The machine, the plots, where the settings are."""
    mach = m["machine"]
    lines = [
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
    return lines
