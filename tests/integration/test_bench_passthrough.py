"""The passthrough ceiling of `recstream bench pipeline` on the real broker: it reads every
event, writes one list-sized record for each, and leaves no topic behind."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaAdminClient

from recstream.bench_passthrough import run_passthrough_bench
from recstream.config.settings import Settings

pytestmark = pytest.mark.integration


def _events(n: int) -> list[dict[str, object]]:
    return [
        {
            "user_id": f"u{k % 17}",
            "event_type": "view",
            "item_id": f"i{k % 40}",
            "ts": 1_700_000_000 + k,
            "event_id": f"pt-{k}",
        }
        for k in range(n)
    ]


@pytest.mark.parametrize("template", [None, "list"])
def test_passthrough_reads_and_writes_every_event(broker: Settings, template: str | None) -> None:
    settings = Settings(
        bootstrap=broker.bootstrap_servers, events_partitions=4, recommendations_partitions=4
    )
    record = {"user_id": "x", "as_of": {"event_id": "e", "ts": 0.0}, "items": [], "pad": "p" * 900}
    out = run_passthrough_bench(
        settings, _events(300), list_record=record if template else None, timeout_s=120
    )
    assert out["events"] == out["read"] == out["written"] == 300
    assert out["events_per_s"] > 0 and out["seconds"] > 0
    assert out["partitions"] == {"in": 4, "out": 4}
    assert out["template"] == ("list" if template else "synthetic")
    if template:
        assert out["record_bytes"] == len(json.dumps(record).encode())
    else:
        assert out["record_bytes"] >= 2000
    assert out["producer"]["acks"] == "all"  # as the Faust app's producer
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        left = set(admin.list_topics()) & set(out["topics"].values())
    finally:
        admin.close()
    assert not left, f"topics left behind: {left}"
