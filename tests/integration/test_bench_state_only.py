"""The state-only run of `recstream bench pipeline` on the real broker: workers with lists off,
completion read off the workers' committed offsets, the changelog records counted, no topic
left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from rich.console import Console

import recstream.bench_pipeline as bench
from recstream.config.settings import Settings
from recstream.evaluation.replay import replay
from recstream.evaluation.synthetic import SyntheticConfig, generate

pytestmark = pytest.mark.integration


def test_state_only_replay_completes_on_committed_offsets(broker: Settings, tmp_path: Path) -> None:
    data = generate(SyntheticConfig(n_items=80, n_users=6, events_per_user=50, seed=3))
    items = [dict(i) for i in data.items]
    events = [dict(e) for e in data.events[:300]]
    settings = Settings(
        bootstrap=broker.bootstrap_servers,
        events_partitions=4,
        recommendations_partitions=4,
        items_partitions=2,
        log_level="info",
    )
    probe = bench.RunProbe(last_write_of=bench.STATE_CHANGELOGS, lists=False)
    result = replay(
        settings,
        items,
        events,
        workers=1,
        work_dir=tmp_path,
        console=Console(stderr=True),
        overrides={"publish_lists": False},
        on_phase=probe,
        completion="offsets",
        idle_timeout_s=60.0,
    )
    assert result.settings.publish_lists is False
    assert result.completion == "offsets" and result.uncommitted == 0, result.notes
    assert result.committed_ms is not None and result.committed_ms >= result.first_sent_ms
    assert result.lists == []  # lists really were off

    so = bench.summarize_state_only(result, probe.records(result.n_events), probe.last_write_ms)
    assert so["all_committed"] is True and so["events"] == 300
    assert so["events_per_s"] is not None and so["events_per_s"] > 0
    # The last state write precedes the commit that completes the run.
    assert so["last_write_s"] is not None and 0 < so["last_write_s"] <= so["wall_s"]
    by_topic = so["records_by_topic"]
    assert by_topic["recommendations"]["records"] == 0
    assert by_topic["user-state-changelog"]["records"] > 0
    assert by_topic["shared-deltas-changelog"]["records"] > 0
    assert so["records_per_event"] is not None and so["records_per_event"] > 0

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        tag = result.settings.app_id
        left = [t for t in admin.list_topics() if t.startswith(tag)]
    finally:
        admin.close()
    assert not left, f"topics left behind: {left}"
