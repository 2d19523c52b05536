"""The settings object: defaults, environment overrides, validation, immutability."""

from __future__ import annotations

import pydantic
import pytest

from recstream.config.settings import Settings


def test_defaults_are_documented_and_sane() -> None:
    s = Settings()
    assert s.events_partitions == 8
    assert s.bootstrap_servers == f"127.0.0.1:{s.kafka_port}"
    assert s.uses_local_broker
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no documentation"


def test_environment_overrides_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("RECSTREAM_EVENTS_PARTITIONS", "16")
    monkeypatch.setenv("RECSTREAM_RECOMMENDATIONS_PARTITIONS", "16")
    monkeypatch.setenv("RECSTREAM_TOPIC_PREFIX", "t1-")
    s = Settings()
    assert s.bootstrap_servers == "broker:9092" and not s.uses_local_broker
    assert s.events_partitions == 16
    assert s.topic(s.events_topic) == "t1-events"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_EVENTS_PARTITIONS", "0")
    with pytest.raises(pydantic.ValidationError, match="events_partitions"):
        Settings()


def test_output_must_be_copartitioned_with_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_EVENTS_PARTITIONS", "16")
    with pytest.raises(pydantic.ValidationError, match="recommendations_partitions"):
        Settings()


def test_store_and_port_consistency() -> None:
    with pytest.raises(pydantic.ValidationError, match="store"):
        Settings(store="redis://")
    with pytest.raises(pydantic.ValidationError, match="must differ"):
        Settings(kafka_port=9000, kafka_controller_port=9000)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.top_k = 5  # type: ignore[misc]


def test_every_engine_setting_reaches_the_engine() -> None:
    """Each engine hyperparameter a setting names arrives in EngineParams unchanged."""
    from recstream.config.engine_params import engine_params

    s = Settings(
        sequence_window_s=120.0,
        sequence_steps=3,
        sequence_sources=4,
        sequence_gap_half_life_s=60.0,
        sequence_half_life_s=86_400.0,
        sequence_neighbours=7,
        sequence_candidates=9,
        feedback_baseline="served",
        feedback_temperature=0.5,
    )
    p = engine_params(s)
    assert (p.sequence_window_s, p.sequence_steps, p.sequence_sources) == (120.0, 3, 4)
    assert (p.sequence_gap_half_life_s, p.sequence_half_life_s) == (60.0, 86_400.0)
    assert (p.sequence_neighbours, p.sequence_candidates) == (7, 9)
    assert p.feedback_baseline == "served"
    assert p.feedback_temperature == 0.5
    assert p.recent_kept == 5  # covisit_recent 5 > steps 3, sources 4
