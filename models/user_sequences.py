"""Per-user item sequences: what the sequence model trains on.

A user's sequence is their positively consumed items in arrival order, by the engine's own
rule (an event whose interest weight is > 0 and that names an item: the items that enter the
user record's recent items), so the model learns from the histories it is later given. Only
the last `keep` items of a user are kept: a training run reads the last windows of each
user, never more.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from recstream.models.errors import RecstreamError
from recstream.models.interest_state import InterestParams


@dataclass
class UserSequences:
    """The trainer's (and the in-process replay's) running log of users' sequences."""

    keep: int = 200
    params: InterestParams = field(default_factory=InterestParams)
    events: int = 0
    #: The latest event time (epoch s) counted so far; None before the first timed event.
    latest_ts: float | None = None
    _seqs: dict[str, deque[str]] = field(default_factory=dict)

    def add(
        self,
        user_id: str,
        event_type: str,
        item_id: str | None,
        value: float | None,
        ts: float | None = None,
    ) -> bool:
        """Count the event (at event time `ts`, epoch s); True when it extended the user's
        sequence. An event the engine would refuse (e.g. a rate without a value) is counted
        and teaches nothing."""
        self.events += 1
        if ts is not None and (self.latest_ts is None or ts > self.latest_ts):
            self.latest_ts = ts
        if item_id is None:
            return False
        try:
            weight = self.params.weight_of(event_type, value)
        except RecstreamError:
            return False
        if weight <= 0:
            return False
        seq = self._seqs.get(user_id)
        if seq is None:
            seq = self._seqs[user_id] = deque(maxlen=self.keep)
        if item_id in seq:
            seq.remove(item_id)  # distinct items, the latest last: as the record's recent items
        seq.append(item_id)
        return True

    def sequences(self) -> list[list[str]]:
        """Every user's sequence (oldest first), users in a fixed (sorted) order."""
        return [list(self._seqs[u]) for u in sorted(self._seqs)]

    def __len__(self) -> int:
        return len(self._seqs)
