"""Running a Faust worker process for the pipeline."""

from __future__ import annotations

import os

from recstream.config.settings import Settings


def limit_blas_threads(threads: int | None) -> None:
    """Cap numpy's BLAS pool for this process (None: leave it as it is).

    Process-wide and lasting: threadpoolctl's limit is kept for the life of the process.
    """
    if threads is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def run_worker(settings: Settings) -> None:
    """Block running one worker until SIGINT/SIGTERM (Faust handles both cleanly)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faust

    from recstream.agents.pipeline import build_pipeline
    from recstream.streams.admin import ensure_topics

    # Source and internal stream topics must exist with the configured partitions before
    # Faust subscribes (streams/admin.py says why the internal ones too).
    ensure_topics(settings, internal=True)
    limit_blas_threads(settings.blas_threads)
    pipeline = build_pipeline(settings)
    pipeline.runtime.load_now()
    # Faust's ProducerBuffer flushes inline once it holds more than `max_messages` (100):
    # a micro-batch writes hundreds of records, and each inline flush stalls the agent.
    pipeline.app.producer.buffer.max_messages = settings.producer_buffer_messages
    worker = faust.Worker(
        pipeline.app,
        loglevel=settings.log_level,
        quiet=True,
        override_logging=True,
    )
    # Faust's terminal spinner lowers the root logger to DEBUG (so that every record moves
    # it), which makes aiokafka and Faust build a LogRecord for each debug line even at level
    # warning: 5% of the event loop in the embedding bench. Workers log to files; no spinner.
    worker.spinner = None
    worker.execute_from_commandline()
