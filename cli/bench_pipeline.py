"""`recstream bench pipeline`: sustained events/s through the real broker and worker processes.

Synthetic events (catalogue first) are replayed through W worker processes with debounce 0, so
every event produces a list (`recstream.replay`). Reported:

- ``events_per_s``: events / (first event sent → the last event's list received), wall seconds;
- ``lists_per_s``: lists received over the same span;
- ``latency_ms``: event → list, from Kafka record timestamps (p50, p95, p99);
- without ``rate`` (throughput mode) events are sent as fast as the pipeline takes them: at most
  ``max_in_flight`` (default 64 per worker) sent events without a list, a closed loop that keeps
  every worker busy without building a backlog (0: no limit; the whole stream then queues up
  and the pipeline is measured working through a backlog);
- with ``rate`` (latency mode) events are paced at that many per second, open loop, so the
  latency is the latency at that sustained rate (it grows without bound above capacity).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from recstream.config.settings import Settings
from recstream.evaluation.metrics import percentiles
from recstream.evaluation.replay import replay
from recstream.evaluation.report import machine_info
from recstream.models.errors import ValidationError

#: Throughput mode's flow-control window, per worker (see the module docstring).
DEFAULT_IN_FLIGHT_PER_WORKER = 64


def bench_events(n_events: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, the first `n_events` events) of a synthetic world sized for `n_events`.

    About 100 events per user (at least 50 users) over 500 items, so per-user state and
    popularity both see realistic reuse.
    """
    from recstream.evaluation.synthetic import SyntheticConfig, generate

    n_users = max(50, math.ceil(n_events / 100))
    per_user = math.ceil(n_events / n_users)
    data = generate(
        SyntheticConfig(n_items=500, n_users=n_users, events_per_user=per_user, seed=seed)
    )
    return [dict(i) for i in data.items], [dict(e) for e in data.events[:n_events]]


def run_pipeline_bench(
    settings: Settings,
    events: int,
    workers: int,
    rate: float | None = None,
    *,
    max_in_flight: int | None = None,
    console: Console | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Replay `events` synthetic events through `workers` workers; see the module docstring.

    Returns a JSON-able dict: events_per_s, lists_per_s, latency_ms {p50, p95, p99}, workers,
    events, plus rate (None: unpaced), ranker(s), startup_s, send_s, unreflected, notes and
    machine (CPU, cores, code version).
    """
    if events < 1:
        raise ValidationError(f"events must be >= 1, got {events}")
    items, evs = bench_events(events)
    folder = work_dir or Path(tempfile.mkdtemp(prefix="recstream-bench-pipeline-"))
    result = replay(
        settings,
        items,
        evs,
        workers=workers,
        work_dir=folder,
        rate=rate,
        max_in_flight=(
            (0 if rate else DEFAULT_IN_FLIGHT_PER_WORKER * workers)
            if max_in_flight is None
            else max_in_flight
        ),
        console=console,
        embedding_cache=settings.home / "eval-cache" / "embedding-cache",
    )
    if work_dir is None:
        # Kept on failure (replay raised above) so that the worker logs can be read.
        shutil.rmtree(folder, ignore_errors=True)
    lat = result.latencies_ms()
    pct = percentiles(lat.tolist(), (50, 95, 99))

    def num(x: float) -> float | None:
        return round(x, 1) if math.isfinite(x) else None

    rankers = sorted({r.ranker for r in result.lists})
    return {
        "events_per_s": num(result.events_per_s),
        "lists_per_s": num(result.lists_per_s),
        "latency_ms": {"p50": num(pct[50]), "p95": num(pct[95]), "p99": num(pct[99])},
        "workers": workers,
        "events": result.n_events,
        "lists": len(result.lists),
        "rate": rate,
        "max_in_flight": result.max_in_flight,
        "ranker": rankers[0] if len(rankers) == 1 else rankers,
        "startup_s": num(result.startup_s),
        "send_s": num(result.send_s),
        "unreflected": len(result.unreflected),
        "notes": result.notes,
        "machine": machine_info(),
    }
