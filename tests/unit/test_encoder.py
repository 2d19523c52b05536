"""TextEncoder with the real bundled all-MiniLM-L6-v2 model (CPU, about 5 s to load)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from recstream.models import encoder as encoder_module
from recstream.models.encoder import TextEncoder
from recstream.models.errors import ModelError, ValidationError
from recstream.models.item_text import item_text, text_key


@pytest.fixture(scope="module")
def enc() -> TextEncoder:
    # Small batches keep the CPU test quick; batching itself is checked below.
    return TextEncoder(device="cpu", batch_size=8)


def assert_unit_rows(x: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_shape_dtype_normalisation_and_similarities(enc: TextEncoder) -> None:
    x = enc.encode(["a cat", "a dog", "quantum physics"])
    assert x.shape == (3, 384) and enc.dim == 384
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert_unit_rows(x)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[0, 1] > sim[1, 2] + 0.2


def test_batch_equals_one_by_one(enc: TextEncoder) -> None:
    texts = [
        item_text("Trail Runner 2", ["Shoes", "Running"], "Light mesh upper for long runs", {}),
        "a cat",
        "Organic green tea, 100 bags",
        "x " * 300,  # longer than max_seq_length: padding differs across batches
        "Stainless steel chef knife with a 20 cm blade.",
        "Kabellose Kopfhörer mit Geräuschunterdrückung",
        "wireless earbuds",
        "a dog",
        "quantum physics textbook for undergraduates",
        "red cotton t-shirt",
    ]
    batch = enc.encode(texts)
    single = np.vstack([enc.encode([t]) for t in texts])
    cosines = np.sum(batch * single, axis=1)
    assert cosines.min() >= 0.999


def test_forward_passes_of_run_size_give_the_vectors_of_one_pass() -> None:
    # A batch is forwarded in length-sorted runs (less padding, activations in cache): the
    # vectors are those of one pass over the whole batch, up to float noise from padding.
    texts = [f"item {i} " + "long words here " * (i % 7) for i in range(40)]
    runs = TextEncoder(device="cpu", batch_size=40)
    assert runs.run_size == 32  # the CPU default for torch
    whole = TextEncoder(device="cpu", batch_size=40, run_size=40)
    assert np.sum(runs.encode(texts) * whole.encode(texts), axis=1).min() >= 0.9999
    with pytest.raises(ValidationError, match="run_size"):
        TextEncoder(device="cpu", run_size=0)


def test_awkward_texts_do_not_crash(enc: TextEncoder) -> None:
    long_text = " ".join(f"word{i}" for i in range(10_000))
    texts = [
        "",
        "   \t\n ",
        "\x00\x01\x1b[31m",  # control characters only (and an ANSI escape's printable tail)
        "ok\x00text\x07",
        long_text,
        "naïve café 日本語のテキスト Ελληνικά עברית 🙂👩\u200d💻",
        "lone\ud800surrogate",
    ]
    x, valid = enc.encode_with_mask(texts)
    assert x.shape == (len(texts), 384) and x.dtype == np.float32
    assert valid.tolist() == [False, False, True, True, True, True, True]
    np.testing.assert_array_equal(x[:2], 0.0)
    assert_unit_rows(x[valid])
    # encode() gives the same rows without the mask.
    np.testing.assert_allclose(enc.encode(texts), x, atol=1e-6)


def test_long_text_is_truncated_to_max_seq_length(enc: TextEncoder) -> None:
    assert enc.max_seq_length == 256
    words = [f"w{i % 97}" for i in range(10_000)]
    full = enc.encode([" ".join(words)])
    prefix = enc.encode([" ".join(words[:1000])])  # also far beyond 256 tokens
    assert float(full[0] @ prefix[0]) >= 0.9999


def test_empty_input_and_bad_arguments(enc: TextEncoder) -> None:
    assert enc.encode([]).shape == (0, 384)
    with pytest.raises(ValidationError, match="single string"):
        enc.encode("a cat")
    with pytest.raises(ValidationError, match="expected str"):
        enc.encode(["a cat", None])


def test_model_id_is_stable(enc: TextEncoder) -> None:
    assert enc.model_id == "all-MiniLM-L6-v2@384d-256t-torch"
    assert enc.model_id == enc.model_id
    assert enc.device == "cpu" and enc.precision == "fp32"
    key = text_key(enc.model_id, "a cat")
    assert key.startswith("all-MiniLM-L6-v2@384d-256t-torch:") and len(key.split(":")[-1]) == 32


def test_shorter_max_seq_length_changes_the_model_id() -> None:
    short = TextEncoder(device="cpu", max_seq_length=16)
    assert short.model_id == "all-MiniLM-L6-v2@384d-16t-torch"
    a, b = short.encode([" ".join(["alpha"] * 20) + " omega", " ".join(["alpha"] * 20)])
    assert float(a @ b) >= 0.9999  # "omega" is past the 16th token


def test_argument_validation_happens_before_loading() -> None:
    with pytest.raises(ValidationError):
        TextEncoder(batch_size=0)
    with pytest.raises(ValidationError):
        TextEncoder(backend="tensorrt")
    with pytest.raises(ValidationError, match="cuda"):
        TextEncoder(device="cpu", precision="fp16")
    with pytest.raises(ValidationError):
        TextEncoder(device="cpu", precision="int4")


def test_onnx_backends_need_an_export_dir_and_a_cpu_or_gpu_runtime() -> None:
    with pytest.raises(ValidationError, match="export_dir"):
        TextEncoder(device="cpu", backend="onnx-int8")
    if not encoder_module._onnx_cuda_available():
        # The onnxruntime wheel runs on the CPU only: a cuda device must be refused, not
        # silently run on the CPU.
        with pytest.raises(ValidationError, match="onnxruntime-gpu"):
            TextEncoder(device="cuda", backend="onnx", export_dir="unused")
    with pytest.raises(ValidationError, match="runs on"):
        TextEncoder(device="mps", backend="onnx", export_dir="unused")


def test_plain_encode_is_the_library_call(enc: TextEncoder) -> None:
    texts = ["a cat", "Organic green tea, 100 bags"]
    want = enc.model.encode(texts, batch_size=enc.batch_size, show_progress_bar=False)
    np.testing.assert_allclose(enc.plain_encode(texts), want, atol=1e-6)


def test_unloadable_model_is_a_model_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(ModelError, match="could not load"):
        TextEncoder(str(tmp_path), device="cpu")


def test_gpu_path_resolves_to_fp16_without_a_gpu() -> None:
    """`recstream bench embed --device cuda`: the torch backend runs fp16 on cuda by default,
    fp32 on the CPU; the ONNX backends stay fp32 (checked without CUDA: pure resolution)."""
    resolve = encoder_module._resolve_precision
    assert resolve("auto", "cuda", "torch") == "fp16"
    assert resolve("auto", "cuda:1", "torch") == "fp16"
    assert resolve("auto", "cpu", "torch") == "fp32"
    assert resolve("auto", "cuda", "onnx-int8") == "fp32"
    assert resolve("bf16", "cuda", "torch") == "bf16"
    with pytest.raises(ValidationError, match="fp32 only"):
        resolve("fp16", "cuda", "onnx")
