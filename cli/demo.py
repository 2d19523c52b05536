"""`recstream demo`: a local broker, one worker and generated users; lists stream to the terminal.

Everything the demo starts (broker if none was running, the worker process, the producer
thread) it stops again at the end, also on Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from recstream.config.settings import Settings
from recstream.evaluation.workers import TrainerProcess, WorkerProcess
from recstream.models.errors import RecstreamError


def demo_settings(settings: Settings, run_dir: Path) -> Settings:
    """The demo's schedule: a minute of events at 20/s should see a few snapshots."""
    s = settings
    return s.model_copy(
        update={
            "snapshot_dir": s.snapshot_dir or run_dir / "snapshots",
            "snapshot_poll_s": min(s.snapshot_poll_s, 2.0),
            "trainer_min_events": min(s.trainer_min_events, 200),
            "trainer_every_events": min(s.trainer_every_events, 300),
            "trainer_every_s": min(s.trainer_every_s, 20.0),
        }
    )


def run_demo(
    settings: Settings,
    *,
    duration_s: float | None,
    n_users: int,
    n_items: int,
    rate: float,
    seed: int,
    console: Console,
) -> None:
    from recstream.evaluation.synthetic import SyntheticConfig, generate, iter_live
    from recstream.local_kafka import LocalKafka
    from recstream.produce import produce
    from recstream.streams.admin import ensure_topics
    from recstream.tail import iter_lists, render_list

    started_broker = False
    broker = LocalKafka(settings)
    if settings.uses_local_broker:
        if not broker.status().running:
            console.print("[bold]starting the local Kafka broker[/bold] ...")
            broker.start()
            started_broker = True
        console.print(f"kafka: {broker.status().describe()}")
    ensure_topics(settings)

    run_dir = Path("var/demo")
    settings = demo_settings(settings, run_dir)
    worker = WorkerProcess(
        settings,
        data_dir=run_dir / "worker",
        web_port=settings.web_port,
        log_file=run_dir / "worker.log",
    ).start()
    console.print(
        f"worker: log {worker.log_file}, lists at {worker.url}/recommendations/<user_id>/"
    )
    trainer = TrainerProcess(
        settings, data_dir=run_dir / "trainer", log_file=run_dir / "trainer.log"
    ).start()
    console.print(f"trainer: log {trainer.log_file}, snapshots in {settings.snapshots}")
    stop = threading.Event()
    sent = {"events": 0}

    # Event time advances with the wall clock: each user emits about every n_users/rate s.
    config = SyntheticConfig(
        n_items=n_items, n_users=n_users, seed=seed, mean_gap_s=n_users / max(rate, 0.1)
    )
    start_ts = time.time()
    catalog = generate(dataclasses.replace(config, start_ts=start_ts, events_per_user=1)).items
    report = produce(settings, "items", list(enumerate(catalog, start=1)))
    console.print(f"catalog: {report.sent} items published")

    def feed() -> None:
        live = iter_live(config, start_ts)

        def records() -> Any:
            for i, event in enumerate(live, start=1):
                if stop.is_set():
                    return
                sent["events"] = i
                yield i, event

        try:
            produce(settings, "events", records(), rate=rate)
        except Exception as exc:
            console.print(f"[red]producer stopped: {exc}[/red]")

    feeder = threading.Thread(target=feed, name="demo-producer", daemon=True)
    feeder.start()
    received = 0
    last_shown = 0.0
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.1)
        for rec in iter_lists(settings, timeout_s=remaining):
            received += 1
            if not worker.alive():
                raise RecstreamError(f"the worker exited; see {worker.log_file}")
            if time.monotonic() - last_shown >= 2.0:
                console.print(render_list(rec))
                console.print(f"[dim]events sent {sent['events']}, lists received {received}[/dim]")
                last_shown = time.monotonic()
    except KeyboardInterrupt:
        console.print("interrupted")
    finally:
        stop.set()
        feeder.join(timeout=10)
        code = worker.stop()
        console.print(f"worker stopped (exit {code})")
        console.print(f"trainer stopped (exit {trainer.stop()})")
        if started_broker:
            broker.stop()
            console.print("kafka: stopped")
    console.print(
        f"[bold]demo done:[/bold] {sent['events']} events sent, {received} lists received"
    )
    if received == 0:
        raise RecstreamError(f"no list arrived; see {run_dir / 'worker.log'}")
