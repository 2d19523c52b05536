"""The sequence model (models/sasrec.py): training, snapshots and their refusals, scoring."""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import replace

import numpy as np
import pytest

from recstream.models import sasrec
from recstream.models.errors import RecstreamError, SnapshotError
from recstream.models.sasrec import SasrecParams, Scorer, Snapshot

N = 30
IDS = tuple(f"m{k:02d}" for k in range(N))
SMALL = SasrecParams(dim=16, heads=2, layers=1, max_len=8, dropout=0.0, epochs=3,
                     warm_epochs=2, batch_size=16, lr=1e-2, loss_share=1.0)  # fmt: skip


def vectors(seed: int = 3, dim: int = 12) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(N, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def cycles(users: int = 24, length: int = 12) -> list[list[str]]:
    """Each user walks the catalogue in steps of 1 from their own start: next = this + 1."""
    return [[IDS[(u + t) % N] for t in range(length)] for u in range(users)]


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return sasrec.train(cycles(), IDS, vectors(), SMALL, seed=1)


def test_training_lowers_the_loss_on_a_toy_sequence(snap: Snapshot) -> None:
    short = sasrec.train(cycles(), IDS, vectors(), replace(SMALL, epochs=1), seed=1)
    more = sasrec.train(cycles(), IDS, vectors(), replace(SMALL, epochs=20), seed=1)
    assert more.loss < short.loss
    # The learnt rule: after m05 comes m06.
    scores = sasrec.score(more, [[IDS[3], IDS[4], IDS[5]]])
    assert int(np.argmax(scores[0])) == 6


def test_a_warm_start_continues_from_the_previous_snapshot(snap: Snapshot) -> None:
    warm = sasrec.train(cycles(), IDS, vectors(), SMALL, seed=1, previous=snap)
    assert warm.meta["warm"] == 1.0 and warm.version == snap.version + 1
    assert warm.loss < snap.loss
    other = sasrec.train(cycles(), IDS, vectors(dim=10), SMALL, seed=1, previous=snap)
    assert other.meta["warm"] == 0.0  # another text width: trained from scratch


def test_snapshot_round_trips_through_bytes(snap: Snapshot) -> None:
    back = Snapshot.from_bytes(snap.to_bytes(), expected_fingerprint=sasrec.fingerprint(IDS))
    assert back.item_ids == IDS and back.params == SMALL and back.version == snap.version
    assert back.fingerprint == snap.fingerprint and back.loss == pytest.approx(snap.loss)
    for name, arr in snap.weights.items():
        np.testing.assert_array_equal(back.weights[name], arr)
    hist = [[IDS[1], IDS[2]], [IDS[9]]]
    np.testing.assert_array_equal(sasrec.score(back, hist), sasrec.score(snap, hist))
    assert back.trained_through_ts is None
    timed = dataclasses.replace(snap, trained_through_ts=1.5e9).with_version(7)
    assert Snapshot.from_bytes(timed.to_bytes()).trained_through_ts == 1.5e9


def _corrupt_header(data: bytes, edit: dict[str, object]) -> bytes:
    """`data` with its header fields replaced and the digest recomputed (a well-formed
    snapshot whose content is wrong, which only the semantic checks catch)."""
    import hashlib

    import orjson

    magic, fmt, n = struct.unpack_from("<4sHI", data)
    head = orjson.loads(data[10 : 10 + n])
    head.update(edit)
    new = orjson.dumps(head)
    body = struct.pack("<4sHI", magic, fmt, len(new)) + new + data[10 + n : -16]
    return body + hashlib.blake2b(body, digest_size=16).digest()


def test_refusals_name_their_reason(snap: Snapshot) -> None:
    data = snap.to_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    cases = {
        "truncated": data[:8],
        "bad magic": b"XXXX" + data[4:],
        "format": data[:4] + struct.pack("<H", 99) + data[6:],
        "checksum": bytes(flipped),
        "fingerprint": _corrupt_header(data, {"item_ids": [*IDS[:-1], "other"]}),
        "shapes": _corrupt_header(data, {"params": {**SMALL.__dict__, "dim": 32}}),
    }
    for reason, bad in cases.items():
        with pytest.raises(SnapshotError, match=reason):
            Snapshot.from_bytes(bad)
    with pytest.raises(SnapshotError, match="another catalogue"):
        Snapshot.from_bytes(data, expected_fingerprint=sasrec.fingerprint(IDS[::-1]))
    assert issubclass(SnapshotError, RecstreamError)


def test_non_finite_weights_are_refused(snap: Snapshot) -> None:
    weights = dict(snap.weights)
    weights["pos.weight"] = np.full_like(weights["pos.weight"], np.nan)
    bad = Snapshot(snap.item_ids, snap.text_dim, snap.params, weights, fingerprint=snap.fingerprint)
    with pytest.raises(SnapshotError, match="non-finite"):
        Snapshot.from_bytes(bad.to_bytes())


def test_scores_have_one_row_per_history_and_are_deterministic(snap: Snapshot) -> None:
    hist = [[IDS[1], IDS[2]], [], ["unknown", IDS[7]]]
    out = sasrec.score(snap, hist)
    assert out.shape == (3, N) and out.dtype == np.float32 and np.isfinite(out).all()
    assert not out[1].any()  # no known history: no evidence
    np.testing.assert_allclose(out[2], sasrec.score(snap, [[IDS[7]]])[0], atol=1e-5)
    again = sasrec.train(cycles(), IDS, vectors(), SMALL, seed=1)
    np.testing.assert_allclose(sasrec.score(again, hist), out, rtol=1e-5, atol=1e-6)


def test_an_item_without_history_is_scored_through_its_text(snap: Snapshot) -> None:
    scorer = Scorer(snap)
    v = vectors()
    table = scorer.item_table([*IDS[:3], "new"], np.vstack([v[:3], v[5:6]]))
    np.testing.assert_array_equal(table[:3], snap.weights["items"][:3])
    # A new item with m05's text lands near m05 (its id embedding is all the difference).
    assert np.linalg.norm(table[3] - snap.weights["items"][5]) < np.linalg.norm(
        table[3] - snap.weights["items"][6]
    )
