"""Running the sequence-model trainer process (one per cluster)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from recstream.config.settings import Settings


def run_trainer_process(settings: Settings) -> int:
    """Block training on schedule until SIGINT/SIGTERM; returns the snapshots written."""
    from recstream.agents.trainer import run_trainer
    from recstream.streams.admin import ensure_topics

    # Info at least: a trainer's log is its list of snapshots.
    level = min(logging.INFO, logging.getLevelName(settings.log_level.upper()))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    ensure_topics(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return run_trainer(settings, stop)
