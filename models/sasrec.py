"""A small SASRec-class sequence model: a causal transformer over the user's item sequence.

Given a user's last items (oldest first), the model's last hidden state scores every item of
its catalogue by a dot product with the item's embedding; it is trained with full-softmax
cross-entropy on "the next item" at every position of each user's sequence (Kang & McAuley,
2018, with the sampled negatives replaced by the whole catalogue, which a catalogue of ~10k
items affords).

An item's embedding is a learned linear projection of its text vector (the MiniLM vector of
the catalogue) plus a learned id embedding. The projection is shared by all items, so an item
with text but no history (its id embedding untrained, near 0) still lands next to the items
whose texts it resembles; the id embedding learns what the text does not say.

Pure: torch and numpy only, no settings; every hyperparameter is a `SasrecParams` field and
training is seeded. `Snapshot.to_bytes`/`from_bytes` is the trained model's exchange format
(trainer → workers), validated on read (`SnapshotError` says which check failed).
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt
import orjson
import torch
import torch.nn.functional as F
from torch import nn

from recstream.models.errors import SnapshotError, ValidationError

FloatArray = npt.NDArray[np.float32]
MAGIC = b"RSAS"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<4sHI")  # magic, format version, header length
_DIGEST = 16  # blake2b of everything before it


@dataclass(frozen=True)
class SasrecParams:
    """Hyperparameters of the network and of one training run."""

    dim: int = 64
    heads: int = 1
    layers: int = 2
    max_len: int = 50
    dropout: float = 0.2
    #: Epochs from scratch, and epochs when warm-started from a previous snapshot.
    epochs: int = 6
    warm_epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-3
    #: Training windows per user: the last `max_len + 1` items, then the ones before, ...
    windows_per_user: int = 4
    #: Share of a window's targets that enter the loss (drawn per batch; the window's last
    #: target always does). The full-softmax product (targets × catalogue × dim) is almost all
    #: of the cost, and neighbouring targets of one window teach much the same.
    loss_share: float = 0.5

    def check(self) -> SasrecParams:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValidationError(f"dim {self.dim} must be a positive multiple of heads")
        if self.layers < 1 or self.max_len < 2 or self.batch_size < 1:
            raise ValidationError("layers >= 1, max_len >= 2 and batch_size >= 1 are required")
        if not 0.0 <= self.dropout < 1.0 or not self.lr > 0.0:
            raise ValidationError("dropout in [0, 1) and lr > 0 are required")
        if not 0.0 < self.loss_share <= 1.0:
            raise ValidationError(f"loss_share must be in (0, 1], got {self.loss_share}")
        return self


def fingerprint(item_ids: Sequence[str]) -> str:
    """The catalogue a model was trained on: a hash of its item ids in row order."""
    h = hashlib.blake2b(digest_size=16)
    for item_id in item_ids:
        h.update(item_id.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """A trained model: its catalogue (item ids, row order), hyperparameters and weights
    (float32 arrays by name, with ``items``: the final item embedding table, rows × dim)."""

    item_ids: tuple[str, ...]
    text_dim: int
    params: SasrecParams
    weights: dict[str, FloatArray]
    version: int = 0
    trained_events: int = 0
    loss: float = math.nan
    train_s: float = 0.0
    fingerprint: str = ""
    meta: dict[str, float] = field(default_factory=dict)
    #: The latest event time (epoch s) among the events it was trained on; None: unknown.
    #: A worker serves it once it has processed a later event (prequential; agents/snapshots.py).
    trained_through_ts: float | None = None

    def with_version(self, version: int) -> Snapshot:
        return Snapshot(
            self.item_ids, self.text_dim, self.params, self.weights, version,
            self.trained_events, self.loss, self.train_s, self.fingerprint, dict(self.meta),
            self.trained_through_ts,
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        """magic, format version, header length, header JSON, raw float32 tensors, digest."""
        names = sorted(self.weights)
        header = {
            "format": FORMAT_VERSION,
            "version": self.version,
            "fingerprint": self.fingerprint or fingerprint(self.item_ids),
            "item_ids": list(self.item_ids),
            "text_dim": self.text_dim,
            "params": asdict(self.params),
            "trained_events": self.trained_events,
            "loss": self.loss if math.isfinite(self.loss) else None,
            "train_s": self.train_s,
            "trained_through_ts": self.trained_through_ts,
            "tensors": [[n, list(self.weights[n].shape)] for n in names],
        }
        head = orjson.dumps(header)
        body = b"".join(np.ascontiguousarray(self.weights[n], np.float32).tobytes() for n in names)
        data = _HEAD.pack(MAGIC, FORMAT_VERSION, len(head)) + head + body
        return data + hashlib.blake2b(data, digest_size=_DIGEST).digest()

    @classmethod
    def from_bytes(cls, data: bytes, expected_fingerprint: str | None = None) -> Snapshot:
        """Decode and validate; SnapshotError names the check that refused `data`."""
        if len(data) < _HEAD.size + _DIGEST:
            raise SnapshotError(f"truncated snapshot ({len(data)} bytes)")
        magic, fmt, head_len = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise SnapshotError("not a sasrec snapshot (bad magic)")
        if fmt != FORMAT_VERSION:
            raise SnapshotError(f"snapshot format {fmt}, this reader knows {FORMAT_VERSION}")
        body, digest = data[:-_DIGEST], data[-_DIGEST:]
        if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
            raise SnapshotError("corrupt snapshot (checksum mismatch)")
        try:
            header = orjson.loads(data[_HEAD.size : _HEAD.size + head_len])
            ids = tuple(str(i) for i in header["item_ids"])
            params = SasrecParams(**header["params"]).check()
            text_dim = int(header["text_dim"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            raise SnapshotError(f"unreadable snapshot header: {exc}") from None
        if fingerprint(ids) != header["fingerprint"]:
            raise SnapshotError("snapshot item ids do not match its catalogue fingerprint")
        if expected_fingerprint is not None and header["fingerprint"] != expected_fingerprint:
            raise SnapshotError(
                f"snapshot of another catalogue ({header['fingerprint']}, "
                f"expected {expected_fingerprint})"
            )
        weights = _read_tensors(body, _HEAD.size + head_len, header["tensors"])
        _check_shapes(weights, len(ids), text_dim, params)
        loss, through = header.get("loss"), header.get("trained_through_ts")
        return cls(
            ids, text_dim, params, weights, int(header["version"]),
            int(header["trained_events"]), math.nan if loss is None else float(loss),
            float(header.get("train_s", 0.0)), str(header["fingerprint"]),
            trained_through_ts=None if through is None else float(through),
        )  # fmt: skip


def _read_tensors(body: bytes, start: int, spec: list[list[object]]) -> dict[str, FloatArray]:
    out: dict[str, FloatArray] = {}
    at = start
    for name, shape in spec:
        dims = tuple(int(x) for x in shape)  # type: ignore[attr-defined]
        size = int(np.prod(dims)) * 4
        if at + size > len(body):
            raise SnapshotError(f"snapshot tensor {name} runs past the end")
        arr = np.frombuffer(body, dtype=np.float32, count=size // 4, offset=at).reshape(dims)
        if not np.isfinite(arr).all():
            raise SnapshotError(f"snapshot tensor {name} has non-finite weights")
        out[str(name)] = arr
        at += size
    if at != len(body):
        raise SnapshotError("snapshot has trailing bytes after its tensors")
    return out


def _check_shapes(
    weights: dict[str, FloatArray], n_items: int, text_dim: int, params: SasrecParams
) -> None:
    """The tensors a network of these sizes has, each of its shape (incompatible: refused)."""
    expected = {n: tuple(t.shape) for n, t in _Net(n_items, text_dim, params).state_dict().items()}
    expected["items"] = (n_items, params.dim)
    got = {n: tuple(a.shape) for n, a in weights.items()}
    if got != expected:
        wrong = sorted(n for n in set(got) | set(expected) if got.get(n) != expected.get(n))
        raise SnapshotError(f"incompatible snapshot shapes: {wrong[:4]}")


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        p = self.p if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class _Net(nn.Module):
    """Item rows are 1..n in the id table (0: padding); positions count from the window's
    left edge of a left-padded window, so the latest item always has the last position."""

    def __init__(self, n_items: int, text_dim: int, p: SasrecParams) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, p.dim, bias=False)
        self.ids = nn.Embedding(n_items + 1, p.dim, padding_idx=0)
        self.pos = nn.Embedding(p.max_len, p.dim)
        self.blocks = nn.ModuleList(_Block(p.dim, p.heads, p.dropout) for _ in range(p.layers))
        self.norm = nn.LayerNorm(p.dim)
        self.drop = nn.Dropout(p.dropout)
        # Small id embeddings: at first an item is its text's projection.
        nn.init.normal_(self.ids.weight, std=0.01)
        with torch.no_grad():
            self.ids.weight[0].zero_()
        # Unit-norm text vectors → embeddings of norm ~1 (×√dim at the input, as in SASRec),
        # and positions a small offset on them rather than drowning them (N(0, 1) default).
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(p.dim))
        nn.init.normal_(self.pos.weight, std=0.1)

    def item_table(self, text: torch.Tensor) -> torch.Tensor:
        """(n_items + 1) × dim: row 0 padding (zeros), row r + 1 catalogue row r."""
        projected = torch.cat([text.new_zeros(1, text.shape[1]), text]) @ self.proj.weight.T
        return projected + self.ids.weight

    def hidden(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Hidden states batch × max_len × dim of left-padded `seq` (0: padding)."""
        n = seq.shape[1]
        x = F.embedding(seq, table) * math.sqrt(table.shape[1]) + self.pos.weight[-n:]
        x = self.drop(x) * (seq > 0).unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        # A position sees itself and earlier non-padding positions (never an empty row).
        mask = (causal & (seq > 0).unsqueeze(1)) | torch.eye(n, dtype=torch.bool, device=seq.device)
        for block in self.blocks:
            x = block(x, mask.unsqueeze(1))
        return self.norm(x)


def pick_device(device: str | None = None) -> torch.device:
    """`device`, else CUDA when present, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def windows(
    sequences: Sequence[Sequence[int]], max_len: int, per_user: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(inputs, targets), each windows × max_len, left-padded (inputs 0, targets −100) from
    sequences of catalogue rows: per user its last `per_user` windows of max_len + 1 items."""
    ins, outs = [], []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64) + 1
        end = s.size
        for _ in range(per_user):
            if end < 2:
                break
            w = s[max(0, end - max_len - 1) : end]
            x, y = np.zeros(max_len, np.int64), np.full(max_len, -100, np.int64)
            x[max_len - w.size + 1 :], y[max_len - w.size + 1 :] = w[:-1], w[1:] - 1
            ins.append(x)
            outs.append(y)
            end -= max_len
    if not ins:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    return np.stack(ins), np.stack(outs)


def _warm_start(net: _Net, previous: Snapshot, item_ids: Sequence[str], text_dim: int) -> bool:
    """Load `previous`'s weights into `net` where they fit: everything when the catalogue is
    the same, else every shared tensor and the id rows of the items both catalogues have.
    False (nothing loaded) when the network sizes differ."""
    if previous.params.dim != net.pos.weight.shape[1] or previous.text_dim != text_dim:
        return False
    state = net.state_dict()
    old = {n: torch.from_numpy(np.array(a)) for n, a in previous.weights.items() if n != "items"}
    fits = (n in state and state[n].shape == t.shape for n, t in old.items() if n != "ids.weight")
    if not all(fits):
        return False
    old_ids = old.pop("ids.weight")
    ids = state["ids.weight"].clone()
    where = {i: r for r, i in enumerate(previous.item_ids)}
    pairs = [(r + 1, where[i] + 1) for r, i in enumerate(item_ids) if i in where]
    if pairs:
        new_rows, old_rows = (torch.tensor(x) for x in zip(*pairs, strict=True))
        ids[new_rows] = old_ids[old_rows]
    net.load_state_dict({**old, "ids.weight": ids})
    return True


def _epoch(
    net: _Net,
    opt: torch.optim.Optimizer,
    text: torch.Tensor,
    data: tuple[torch.Tensor, torch.Tensor],
    p: SasrecParams,
    gen: torch.Generator,
) -> float:
    """One pass over the windows in a seeded order; the mean loss per target."""
    x_all, y_all = data
    order = torch.randperm(x_all.shape[0], generator=gen).to(x_all.device)
    total, count = 0.0, 0
    for a in range(0, order.numel(), p.batch_size):
        idx = order[a : a + p.batch_size]
        x, y = x_all[idx], y_all[idx]
        table = net.item_table(text)
        h = net.hidden(x, table)
        drawn = torch.rand(y.shape, generator=gen).to(y.device) < p.loss_share
        drawn[:, -1] = True
        keep = (y >= 0) & drawn
        # Logits only where there is a target: full softmax over the catalogue (rows 1..n).
        logits = h[keep] @ table[1:].T
        loss = F.cross_entropy(logits, y[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = int(keep.sum())
        total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def train(
    sequences: Sequence[Sequence[str]],
    item_ids: Sequence[str],
    item_vectors: FloatArray,
    params: SasrecParams | None = None,
    seed: int = 0,
    previous: Snapshot | None = None,
    *,
    device: str | None = None,
    trained_events: int = 0,
    trained_through_ts: float | None = None,
) -> Snapshot:
    """A model of next items over the catalogue `item_ids` (row r: text vector
    `item_vectors[r]`; zeros for an item without text) from users' item sequences (oldest
    first; ids outside the catalogue are skipped), warm-started from `previous` where its
    weights fit. Seeded: the same inputs and seed give the same weights on one device."""
    p = (params or SasrecParams()).check()
    started = time.perf_counter()
    if item_vectors.shape[0] != len(item_ids):
        raise ValidationError(f"{item_vectors.shape[0]} vectors for {len(item_ids)} items")
    row = {i: r for r, i in enumerate(item_ids)}
    seqs = [[row[i] for i in s if i in row] for s in sequences]
    dev = pick_device(device)
    torch.manual_seed(seed)
    net = _Net(len(item_ids), int(item_vectors.shape[1]), p)
    warm = previous is not None and _warm_start(net, previous, item_ids, item_vectors.shape[1])
    net.to(dev).train()
    text = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32)).to(dev)
    x, y = (torch.from_numpy(a).to(dev) for a in windows(seqs, p.max_len, p.windows_per_user))
    opt = torch.optim.Adam(net.parameters(), lr=p.lr)
    gen = torch.Generator().manual_seed(seed)
    loss = math.nan
    if x.shape[0]:
        for _ in range(p.warm_epochs if warm else p.epochs):
            loss = _epoch(net, opt, text, (x, y), p, gen)
    net.eval()
    with torch.no_grad():
        table = net.item_table(text)[1:]
    weights = {n: t.detach().cpu().numpy().astype(np.float32) for n, t in net.state_dict().items()}
    weights["items"] = table.cpu().numpy().astype(np.float32)
    return Snapshot(
        tuple(item_ids), int(item_vectors.shape[1]), p, weights,
        previous.version + 1 if previous is not None else 1, trained_events, loss,
        time.perf_counter() - started, fingerprint(item_ids), {"warm": float(warm)},
        trained_through_ts,
    )  # fmt: skip


class Scorer:
    """A snapshot ready to score: its network in eval mode, on CPU or CUDA."""

    def __init__(self, snapshot: Snapshot, device: str | None = None) -> None:
        self.snapshot = snapshot
        self.device = pick_device(device)
        p = snapshot.params
        net = _Net(len(snapshot.item_ids), snapshot.text_dim, p)
        net.load_state_dict(
            {n: torch.from_numpy(np.array(a)) for n, a in snapshot.weights.items() if n != "items"}
        )
        self.net = net.to(self.device).eval()
        self.row = {i: r for r, i in enumerate(snapshot.item_ids)}
        items = torch.from_numpy(np.array(snapshot.weights["items"]))
        self.table = torch.cat([items.new_zeros(1, p.dim), items]).to(self.device)

    def user_states(self, histories: Sequence[Sequence[str]]) -> FloatArray:
        """float32[B, dim]: each history's last hidden state (one batched forward pass);
        items the model does not know are skipped, and an empty history gives zeros."""
        n = self.snapshot.params.max_len
        seq = np.zeros((len(histories), n), dtype=np.int64)
        for b, h in enumerate(histories):
            rows = [self.row[i] + 1 for i in h if i in self.row][-n:]
            if rows:
                seq[b, n - len(rows) :] = rows
        if not len(histories):
            return np.zeros((0, self.snapshot.params.dim), dtype=np.float32)
        with torch.no_grad():
            padded = torch.from_numpy(seq).to(self.device)
            last = self.net.hidden(padded, self.table)[:, -1]
            last = last * (padded[:, -1:] > 0)
        return np.asarray(last.cpu().numpy(), dtype=np.float32)

    def item_table(self, item_ids: Sequence[str], vectors: FloatArray) -> FloatArray:
        """float32[len(item_ids), dim]: the model's embedding of each item, and for an item
        it was not trained on the projection of its text vector `vectors[j]` (zeros: none)."""
        with torch.no_grad():
            v = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
            out = (v.to(self.device) @ self.net.proj.weight.T).cpu().numpy()
        known = [(j, self.row[i]) for j, i in enumerate(item_ids) if i in self.row]
        if known:
            js, rs = (np.asarray(x, dtype=np.int64) for x in zip(*known, strict=True))
            out[js] = self.snapshot.weights["items"][rs]
        return np.asarray(out, dtype=np.float32)

    def score(self, histories: Sequence[Sequence[str]]) -> FloatArray:
        """float32[B, items]: scores of every item of the snapshot's catalogue (its rows)."""
        return np.asarray(
            self.user_states(histories) @ self.snapshot.weights["items"].T, dtype=np.float32
        )


def score(snapshot: Snapshot, histories: Sequence[Sequence[str]]) -> FloatArray:
    """Scores float32[B, items] over the snapshot's catalogue rows for a batch of users'
    histories (item ids, oldest first), in one forward pass."""
    return Scorer(snapshot).score(histories)
