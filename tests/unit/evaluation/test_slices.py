"""The long-tail slice, candidate recall and the ablation summary of `recstream eval`, on
hand-made event streams whose answers are counted by hand (evaluation/prequential.py,
evaluation/scoring.py, evaluation/replay.py CandidatePool, evaluation/inprocess.py)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recstream.evaluation.inprocess import ABLATIONS, collected
from recstream.evaluation.prequential import ScoreCard, is_target, long_tail_cases
from recstream.evaluation.replay import CandidatePool, CollectedList
from recstream.evaluation.report import write_lists
from recstream.evaluation.scoring import (
    ablation_summary,
    candidate_recall,
    long_tail,
    score_pipeline,
)
from recstream.models.errors import ValidationError
from recstream.models.recommender import RecList


def ev(user: str, eid: str, ts: float, item: str | None, etype: str = "click",
       value: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {"user_id": user, "event_id": eid, "ts": ts, "item_id": item, "event_type": etype,
            "value": value}  # fmt: skip


def target(event: dict[str, Any]) -> bool:
    return is_target(event)


def lst(user: str, reflects: str, items: tuple[str, ...], pool: CandidatePool | None = None,
        ranker: str = "fused") -> CollectedList:  # fmt: skip
    return CollectedList(user, reflects, 0.0, 0, ranker, items, {}, (), pool)


# --- long tail ---------------------------------------------------------------------------------
def test_long_tail_counts_earlier_target_events_of_any_user_in_replay_order() -> None:
    events = [
        ev("u", "1", 0, "a"),  # a: 0 earlier -> tail
        ev("v", "2", 1, "a"),  # a: 1 earlier -> tail
        ev("w", "3", 2, "a", "view"),  # not a target: neither a case nor counted
        ev("w", "4", 3, "a", "rate", 3.0),  # a low rating: not counted either
        ev("w", "5", 4, "a"),  # a: 2 earlier -> not tail (below=2)
        ev("w", "5", 4, "a"),  # duplicate: skipped, not counted
        ev("u", "6", 5, "b", "rate", 4.5),  # b: 0 earlier -> tail
        ev("x", "7", 6, "a", "purchase"),  # a: 3 earlier -> not tail
        ev("x", "8", 7, None, "search"),
    ]
    assert long_tail_cases(events, target, below=2) == {("u", "1"), ("v", "2"), ("u", "6")}
    everything = {("u", "1"), ("v", "2"), ("w", "5"), ("u", "6"), ("x", "7")}
    assert long_tail_cases(events, target) == everything  # default below 5: all items rare
    assert long_tail_cases(events, target, below=0) == frozenset()


def test_long_tail_by_default_stops_at_the_fifth_earlier_interaction() -> None:
    events = [ev(f"u{n}", f"e{n}", n, "a") for n in range(7)]
    tail = long_tail_cases(events, target)
    assert tail == {(f"u{n}", f"e{n}") for n in range(5)}  # 0..4 earlier; 5 and 6 are not


def test_scorecard_subset_scores_only_the_named_cases() -> None:
    card = ScoreCard(k=2, recall_k=2)
    card.add("u", 0.0, ["a", "b"], "a", case_id="1")  # hit, ndcg 1
    card.add("u", 1.0, ["a", "b"], "b", case_id="2")  # hit, ndcg 1/log2(3)
    card.add("v", 2.0, ["a", "b"], "z", case_id="3")  # miss
    sub = card.subset({("u", "2"), ("v", "3"), ("nobody", "1")})
    assert sub["n"] == 2
    assert sub["hr@2"] == pytest.approx(0.5)
    assert sub["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)
    empty = card.subset(frozenset())
    assert empty["n"] == 0 and math.isnan(float(empty["hr@2"]))


def test_long_tail_section_scores_every_system_on_the_same_warm_cases() -> None:
    events = [
        ev("u", "1", 0, "a"),  # u's first event: cold start, not a warm case
        ev("v", "2", 1, "b"),  # cold start
        ev("u", "3", 2, "b"),  # b: 1 earlier -> tail, warm
        ev("v", "4", 3, "a"),  # a: 1 earlier -> tail, warm
        ev("u", "5", 4, "a"),  # a: 2 earlier -> tail (below 5), warm
    ]
    lists = [lst("u", "1", ("b",)), lst("v", "2", ("z",)), lst("u", "3", ("a",))]
    card, cold = score_pipeline(events, lists, target, item_users={}, n_users=0, vectors=None)
    assert cold == 2 and len(card) == 3
    section = long_tail(events, target, {"recstream": card})
    assert section["targets"] == 5 and section["scored"] == 3 and section["share"] == 1.0
    assert section["systems"]["recstream"]["hr@10"] == pytest.approx(2 / 3)  # 3 and 5 hit


# --- candidate recall --------------------------------------------------------------------------
def test_candidate_pool_is_a_set_of_item_ids() -> None:
    row_of = {"a": 0, "b": 1, "c": 2, "d": 7}
    pool = CandidatePool(np.array([7, 0, 7], dtype=np.int64), row_of)
    assert len(pool) == 2
    assert "a" in pool and "d" in pool
    assert "b" not in pool and "c" not in pool  # in the catalogue, not in the pool
    assert "zzz" not in pool and 3 not in pool  # unknown ids, not a string


def test_collected_keeps_the_fused_lists_pool_as_ids() -> None:
    row_of = {"a": 0, "b": 1, "c": 2}
    rec = RecList("u", "r", "e1", 5.0, "fused", [], {}, [], None, np.array([2, 0]))
    kept = collected(rec, row_of)
    assert kept.candidates is not None and "c" in kept.candidates and "b" not in kept.candidates
    assert collected(rec).candidates is None  # no id map: nothing to keep
    popular = RecList("u", "r", "e1", 5.0, "popularity", [], {}, [], None)
    assert collected(popular, row_of).candidates is None  # that ranker has no pool


def test_candidate_recall_is_the_share_of_targets_in_the_scored_lists_pool() -> None:
    row_of = {i: n for n, i in enumerate("abcdef")}
    events = [
        ev("u", "1", 0, "a"),  # cold start
        ev("u", "2", 10, "b"),  # scored against list of 1: pool {b, c} -> in pool (ranked 2nd)
        ev("u", "3", 20, "c"),  # list of 2: pool {a, b} -> not in pool
        ev("u", "4", 30, "d", "view"),  # not a target
        ev("u", "5", 40, "e"),  # list of 4: pool {e} -> in pool, though not ranked at all
        ev("u", "6", 50, "f"),  # the list of 5 never arrived -> not a candidate
    ]
    lists = [
        lst("u", "1", ("c", "b"), CandidatePool([1, 2], row_of)),
        lst("u", "2", ("a",), CandidatePool([0, 1], row_of)),
        lst("u", "4", ("a",), CandidatePool([4], row_of)),
    ]
    card, _ = score_pipeline(events, lists, target, item_users={}, n_users=0, vectors=None)
    assert card.in_pool == [1.0, 0.0, 1.0, 0.0]
    assert card.summary()["candidate_recall"] == pytest.approx(0.5)
    section = candidate_recall({"recstream": card}, [10.0, 30.0, 50.0])
    assert section["available"] is True
    assert section["systems"]["recstream"]["overall"] == pytest.approx(0.5)
    assert section["systems"]["recstream"]["by_slice"] == [pytest.approx(0.5)] * 2
    assert section["systems"]["recstream"]["n"] == 4


def test_candidate_recall_is_not_available_for_lists_without_pools() -> None:
    events = [ev("u", "1", 0, "a"), ev("u", "2", 1, "b")]
    kafka_lists = [lst("u", "1", ("b",))]  # what the Kafka runner collects: no pool
    card, _ = score_pipeline(events, kafka_lists, target, item_users={}, n_users=0, vectors=None)
    assert card.summary()["hr@10"] == 1.0
    assert card.summary()["candidate_recall"] is None
    assert card.slices([0.0, 1.0])[0]["candidate_recall"] is None
    baseline = ScoreCard()
    baseline.add("u", 1.0, ["b"], "b")
    section = candidate_recall({"recstream": card, "popularity": baseline}, [0.0, 1.0])
    assert section == {
        "available": False,
        "note": "n/a: the lists carry no candidate pool (the Kafka wire format)",
        "systems": {},
    }


def test_write_lists_writes_a_pools_size_not_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "lists.jsonl.gz"
    write_lists(path, [lst("u", "1", ("a",), CandidatePool([0, 3], {"a": 0})), lst("v", "2", ())])
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    assert [r["candidates"] for r in rows] == [2, None]
    assert rows[0]["items"] == ["a"] and rows[0]["user_id"] == "u"


# --- ablations ---------------------------------------------------------------------------------
def test_ablations_turn_off_exploration_and_mmr() -> None:
    assert ABLATIONS == {
        "no_exploration": {"exploration_share": 0.0},
        "no_mmr": {"mmr_trade_off": 1.0},
    }


def test_ablation_summary_states_what_each_part_adds() -> None:
    def card(hits: list[str]) -> ScoreCard:
        c = ScoreCard(k=10, recall_k=20)
        for n, h in enumerate(hits):
            c.add("u", float(n), [h], "a")
        return c

    cards = {"recstream": card(["a", "a", "z", "z"]), "no_mmr": card(["a", "z", "z", "z"])}
    runs = {"no_mmr": {"overrides": {"mmr_trade_off": 1.0}, "wall_s": 1.0}}
    out = ablation_summary(cards, {**runs, "no_exploration": {"overrides": {}}})
    assert set(out) == {"no_mmr"}  # an ablation without scores is left out
    assert out["no_mmr"]["hr@10"] == pytest.approx(0.25)
    assert out["no_mmr"]["hr@10_gain"] == pytest.approx(0.25)  # 0.5 - 0.25: MMR helps
    assert out["no_mmr"]["overrides"] == {"mmr_trade_off": 1.0}


def test_run_eval_refuses_ablations_through_kafka(tmp_path: Path) -> None:
    from recstream.config.settings import Settings
    from recstream.evaluation.run import run_eval

    with pytest.raises(ValidationError, match="--engine inprocess"):
        run_eval(Settings(), "synthetic", tmp_path, encoder_factory=lambda s: None, ablations=True)
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_the_cli_refuses_ablations_through_kafka(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recstream.main import app

    out = tmp_path / "out"
    args = ["eval", "--dataset", "synthetic", "--out", str(out), "--engine", "kafka"]
    result = CliRunner().invoke(app, [*args, "--ablations"])
    assert result.exit_code == 2, result.output
    assert "--ablations" in result.output and "--engine inprocess" in result.output
    assert not out.exists()


def test_best_peer_is_the_strongest_baseline_per_metric_and_names_the_slices_behind() -> None:
    from recstream.evaluation.scoring import best_peer

    systems = {
        "recstream": {"hr@10": 0.30, "ndcg@10": 0.20},
        "item_knn": {"hr@10": 0.25, "ndcg@10": 0.10},
        "sequence_knn": {"hr@10": 0.20, "ndcg@10": 0.16},
        "oracle": {"hr@10": 0.90, "ndcg@10": 0.80},  # not a peer: never the best one
        "fixed_weights": {"hr@10": 0.50, "ndcg@10": 0.50},  # a variant, not a peer
    }

    def rows(*hr: float) -> list[dict[str, float]]:
        return [{"hr@10": h} for h in hr]

    slices = {
        "recstream": rows(0.1, 0.5, 0.2, 0.4),
        "item_knn": rows(0.9, 0.4, 0.3, 0.1),
        "sequence_knn": rows(0.9, 0.6, 0.1, 0.2),
        "oracle": rows(1.0, 1.0, 1.0, 1.0),
    }
    out = best_peer(systems, slices, ["item_knn", "sequence_knn"])
    assert out is not None
    assert out["hr@10"] == {"peer": "item_knn", "value": 0.25, "ratio": pytest.approx(1.2)}
    assert out["ndcg@10"] == {"peer": "sequence_knn", "value": 0.16, "ratio": pytest.approx(1.25)}
    assert out["slices_behind"] == [1, 2]  # slice 0 (the first) is not counted
    assert best_peer(systems, slices, []) is None


@pytest.mark.parametrize(("flag", "concurrent"), [([], True), (["--serial-replays"], False)])
def test_the_cli_runs_the_kafka_replays_side_by_side_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], concurrent: bool
) -> None:
    from typer.testing import CliRunner

    import recstream.evaluation.run as run_module
    from recstream.main import app
    from recstream.models.errors import RecstreamError

    seen: dict[str, object] = {}

    def fake_run_eval(*args: object, **kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        raise RecstreamError("stop here")

    monkeypatch.setattr(run_module, "run_eval", fake_run_eval)
    args = ["eval", "--dataset", "synthetic", "--out", str(tmp_path / "out"), *flag]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "stop here" in result.output, result.output
    assert seen["concurrent_replays"] is concurrent and seen["engine"] == "kafka"
