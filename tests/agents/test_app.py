"""The Faust app built from settings: what it tells other workers about itself."""

from __future__ import annotations

import socket
from pathlib import Path

from recstream.agents.tables import declare_tables
from recstream.config.settings import Settings
from recstream.streams.admin import changelog_topic_specs, internal_topic_specs
from recstream.streams.app import advertised_web_host, create_app
from recstream.streams.topics import declare_topics


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_a_bound_address_is_advertised_as_is(tmp_path: Path) -> None:
    s = settings(tmp_path, web_host="127.0.0.1", web_port=7001)
    assert advertised_web_host(s) == "127.0.0.1"
    app = create_app(s)
    assert str(app.conf.canonical_url) == "http://127.0.0.1:7001"
    assert app.conf.web_bind == "127.0.0.1"


def test_a_wildcard_bind_advertises_this_machine_not_the_wildcard(tmp_path: Path) -> None:
    """In a container (web_host 0.0.0.0) every worker would otherwise advertise 0.0.0.0 and
    answer every per-user request itself, 404 for users other workers own."""
    s = settings(tmp_path, web_host="0.0.0.0", web_port=6066)
    host = advertised_web_host(s)
    assert host not in {"0.0.0.0", "::", ""}
    assert host in {socket.gethostname(), socket.gethostbyname(socket.gethostname())}
    app = create_app(s)
    assert app.conf.canonical_url.host == host
    assert app.conf.web_bind == "0.0.0.0"


def test_an_explicit_advertised_host_wins(tmp_path: Path) -> None:
    s = settings(tmp_path, web_host="0.0.0.0", web_advertised_host="worker-2.internal")
    assert advertised_web_host(s) == "worker-2.internal"


def test_the_worker_creates_every_internal_stream_topic_the_agents_consume(
    tmp_path: Path,
) -> None:
    """The worker creates the internal topics before Faust starts (streams/admin.py): the
    list it creates must be exactly the internal topics declared on the app."""
    s = settings(tmp_path, topic_prefix="p-", items_partitions=3)
    topics = declare_topics(create_app(s), s)
    declared = {
        t.get_topic_name(): t.partitions
        for t in vars(topics).values()
        if getattr(t, "internal", False)
    }
    assert declared and declared == internal_topic_specs(s)


def test_the_worker_creates_every_table_changelog_the_app_declares(tmp_path: Path) -> None:
    """The changelog topics the worker creates before Faust starts are exactly those of the
    app's tables, with their partition counts."""
    s = settings(tmp_path, items_partitions=3, events_partitions=5, recommendations_partitions=5)
    app = create_app(s)
    declare_tables(app, s)
    declared = {t.changelog_topic.get_topic_name(): t.partitions for t in app.tables.values()}
    assert declared == changelog_topic_specs(s)
