"""Write a table key from inside a micro-batch under the event that owns it.

faust-streaming 0.15 takes the partition of every table read and write from the *current
event* (a context variable the stream sets per record): `Table.partition_for_key` picks the
changelog partition from it, and the RocksDB store (`faust/stores/rocksdb.py`, `_set` and
`_get`) the partition database. Inside a `take_events` batch the current event is the batch's
last one, so a batch spanning partitions would read and write other users' keys in the wrong
partition. The batch shells therefore set the current event to an event of the key's own
partition around each read and write; this module is the one place that touches that
private context variable.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import faust
from faust.streams import _current_event


@contextmanager
def as_current_event(event: faust.types.EventT) -> Iterator[None]:
    """Table reads and writes inside the block use `event`'s partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
