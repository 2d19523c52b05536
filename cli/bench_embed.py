"""Embedding throughput benchmark: plain ``SentenceTransformer.encode`` against ``TextEncoder``.

This is the encoder part of the benchmark (part (b)); the end-to-end stage through Kafka builds
on it. Run it directly for a JSON line::

    HF_HUB_OFFLINE=1 python -m recstream.bench_embed --n 2000 --batch-size 256 --device cpu

Timings are wall-clock seconds from ``time.perf_counter``; outputs are numpy arrays, so GPU work
has finished when a timer stops. One warm-up batch runs first so that one-time costs (kernel
selection, allocator growth, lazy imports) are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from recstream.models.encoder import TextEncoder
from recstream.models.item_text import item_text

__all__ = ["run_encode_bench", "synthetic_item_texts"]

# (title nouns, category path, description phrase) per product family: enough variety that
# texts differ in length and vocabulary the way a real catalog does.
_FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, str], str], ...] = (
    (("running shoes", "trail runners", "sneakers"), ("Shoes", "Running"), "for long runs"),
    (("headphones", "earbuds", "headset"), ("Electronics", "Audio"), "with deep bass"),
    (("chef knife", "paring knife", "santoku"), ("Kitchen", "Cutlery"), "for everyday prep"),
    (("green tea", "black tea", "herbal infusion"), ("Grocery", "Tea"), "with a gentle aroma"),
    (("t-shirt", "hoodie", "polo shirt"), ("Clothing", "Tops"), "for a relaxed fit"),
    (("backpack", "duffel bag", "messenger bag"), ("Bags", "Travel"), "for weekend trips"),
    (("novel", "thriller", "short story collection"), ("Books", "Fiction"), "for late nights"),
    (("desk lamp", "floor lamp", "reading light"), ("Home", "Lighting"), "for a cosy room"),
    (("yoga mat", "resistance band", "foam roller"), ("Sports", "Fitness"), "for home workouts"),
    (("board game", "jigsaw puzzle", "card game"), ("Toys", "Games"), "for family evenings"),
    (
        ("smartwatch", "fitness tracker", "sports watch"),
        ("Electronics", "Wearables"),
        "for daily goals",
    ),
    (("coffee grinder", "espresso maker", "french press"), ("Kitchen", "Coffee"), "for mornings"),
)
_BRANDS = ("Acme", "Northwind", "Contoso", "Fabrikam", "Globex", "Initech", "Umbra", "Lumen")
_ADJECTIVES = (
    "lightweight",
    "durable",
    "premium",
    "compact",
    "classic",
    "eco-friendly",
    "wireless",
    "handmade",
    "ergonomic",
    "waterproof",
)
_MATERIALS = ("recycled cotton", "stainless steel", "bamboo", "aluminium", "organic fibre", "oak")
_OPENERS = (
    "{article} {adj} {noun} made of {material}",
    "This {adj} {noun} is built from {material}",
    "Our best-selling {noun}, {adj} and crafted from {material}",
    "{adj_cap} {noun} in {material}",
)


def synthetic_item_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` realistic item texts rendered with :func:`~recstream.models.item_text.item_text`.

    Title (brand, adjective, product, model number), two categories and a one-sentence
    description: about 20-40 word-piece tokens each, like the short product texts the pipeline
    embeds. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for _ in range(n):
        nouns, categories, purpose = _FAMILIES[int(rng.integers(len(_FAMILIES)))]
        noun = nouns[int(rng.integers(len(nouns)))]
        adjective = _ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]
        brand = _BRANDS[int(rng.integers(len(_BRANDS)))]
        material = _MATERIALS[int(rng.integers(len(_MATERIALS)))]
        opener = _OPENERS[int(rng.integers(len(_OPENERS)))]
        title = f"{brand} {adjective.capitalize()} {noun.title()} {int(rng.integers(1, 999))}"
        sentence = opener.format(
            article="An" if adjective[0] in "aeiou" else "A",
            adj=adjective,
            adj_cap=adjective.capitalize(),
            noun=noun,
            material=material,
        )
        if rng.random() < 0.5:
            sentence += f", {purpose}"
        texts.append(item_text(title, categories, sentence + ".", None))
    return texts


def _items_per_s(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def run_encode_bench(
    n: int,
    batch_size: int,
    device: str,
    texts: list[str] | None = None,
    *,
    repeats: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Time plain ``SentenceTransformer.encode`` and ``TextEncoder.encode`` on the same texts.

    Args:
        n: number of texts (the first ``n`` of ``texts`` when given).
        batch_size: texts per forward pass, for both.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        texts: texts to encode; default :func:`synthetic_item_texts` ``(n, seed)``.
        repeats: passes per measurement; the fastest is reported, because on a shared machine
            the fastest pass is the one least disturbed by other load.
        seed: seed of the synthetic texts.

    Returns:
        ``device`` and ``model`` (the encoder's model id); ``n``; ``batch_size``;
        ``encode_items_per_s`` (plain library call over all ``n`` texts);
        ``encoder_items_per_s`` (``TextEncoder.encode`` over all ``n``: cleaning, masking and
        float32 re-normalisation included); ``encode_presorted_items_per_s`` (the library call
        on texts pre-sorted by length, sort included: it tests whether presorting pays);
        ``batch_ms_p50`` / ``batch_ms_p99`` (milliseconds per ``TextEncoder.encode`` call of
        one ``batch_size`` batch, the latency one stream batch sees).
    """
    if n < 1 or batch_size < 1 or repeats < 1:
        raise ValueError("n, batch_size and repeats must be >= 1")
    if texts is None:
        texts = synthetic_item_texts(n, seed)
    elif len(texts) < n:
        raise ValueError(f"{len(texts)} texts given, {n} requested")
    texts = texts[:n]

    encoder = TextEncoder(device=device, batch_size=batch_size)
    model = encoder.model
    encoder.encode(texts[:batch_size])  # warm-up

    def plain() -> None:
        model.encode(texts, batch_size=batch_size, show_progress_bar=False)

    def presorted() -> None:
        # Bound first: inside the call, mypy would infer sorted()'s element type from encode()'s
        # wide ``sentences`` union, which ``len`` does not accept.
        by_length: list[str] = sorted(texts, key=len)
        model.encode(by_length, batch_size=batch_size, show_progress_bar=False)

    def ours() -> None:
        encoder.encode(texts)

    best = {"plain": float("inf"), "presorted": float("inf"), "ours": float("inf")}
    runs = {"plain": plain, "presorted": presorted, "ours": ours}
    # Interleave the variants so that a burst of load from elsewhere hits all of them alike.
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)

    batch_ms: list[float] = []
    for start_index in range(0, n, batch_size):
        batch = texts[start_index : start_index + batch_size]
        start = time.perf_counter()
        encoder.encode(batch)
        batch_ms.append((time.perf_counter() - start) * 1e3)

    return {
        "device": encoder.device,
        "model": encoder.model_id,
        "n": n,
        "batch_size": batch_size,
        "encode_items_per_s": _items_per_s(n, best["plain"]),
        "encoder_items_per_s": _items_per_s(n, best["ours"]),
        "encode_presorted_items_per_s": _items_per_s(n, best["presorted"]),
        "batch_ms_p50": float(np.percentile(batch_ms, 50)),
        "batch_ms_p99": float(np.percentile(batch_ms, 99)),
    }


def main(argv: list[str] | None = None) -> None:
    """Print one JSON object with the figures of :func:`run_encode_bench`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_encode_bench(
        args.n, args.batch_size, args.device, repeats=args.repeats, seed=args.seed
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
