"""SmoothQuant on a small hand-built graph: the same function, narrower activations, less
int8 error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from recstream.models.errors import ModelError
from recstream.models.smooth_quant import smooth_activations

DIM, HIDDEN = 16, 24
WIDE = (3, 11)  # channels that run ~50x wider than the rest, as in BERT's LayerNorm outputs


def _activations(seed: int, rows: int = 64) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(1, rows, DIM)).astype(np.float32)
    x[..., list(WIDE)] *= 50.0
    return x


def _graph(path: Path) -> None:
    """x → (x·A, x·B, x + 1): two MatMuls share x; the Add stands for the residual path."""
    rng = np.random.default_rng(7)
    a = numpy_helper.from_array(rng.normal(size=(DIM, HIDDEN)).astype(np.float32), "A")
    b = numpy_helper.from_array(rng.normal(size=(DIM, HIDDEN)).astype(np.float32), "B")
    one = numpy_helper.from_array(np.ones(DIM, np.float32), "one")
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["ya"], name="/layer.0/query/MatMul"),
        helper.make_node("MatMul", ["x", "B"], ["yb"], name="/layer.0/key/MatMul"),
        helper.make_node("Add", ["x", "one"], ["res"], name="/layer.0/residual"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [value("x", TensorProto.FLOAT, [1, None, DIM])],
        [
            value("ya", TensorProto.FLOAT, None),
            value("yb", TensorProto.FLOAT, None),
            value("res", TensorProto.FLOAT, None),
        ],
        [a, b, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"x": x})]


def _smooth(
    tmp_path: Path, alpha: float = 0.5, patterns: tuple[str, ...] = ("/MatMul$",), want: int = 1
) -> Path:
    source, target = tmp_path / "fp32.onnx", tmp_path / "smoothed.onnx"
    _graph(source)
    calib = _activations(seed=1)
    n = smooth_activations(
        source, target, {"x": calib}, np.ones(calib.shape[:2]), alpha=alpha, patterns=patterns
    )
    assert n == want  # one shared input, one scale
    return target


def test_smoothing_keeps_every_output_and_feeds_both_matmuls_one_scaled_input(
    tmp_path: Path,
) -> None:
    smoothed = _smooth(tmp_path)
    x = _activations(seed=2)
    for want, got in zip(_run(tmp_path / "fp32.onnx", x), _run(smoothed, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    graph = onnx.load(str(smoothed)).graph
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert len({n.input[0] for n in matmuls}) == 1 and matmuls[0].input[0] != "x"
    residual = next(n for n in graph.node if n.op_type == "Add")
    assert residual.input[0] == "x"  # the other reader of x still sees it unscaled


def test_smoothing_narrows_the_activation_ranges_and_cuts_the_int8_error(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    smoothed = _smooth(tmp_path)
    inverse = next(
        numpy_helper.to_array(i)
        for i in onnx.load(str(smoothed)).graph.initializer
        if i.name.endswith("smooth_inv")
    )
    x = _activations(seed=3)
    spread = np.abs(x[0]).max(axis=0)
    assert (spread * inverse).max() / (spread * inverse).min() < spread.max() / spread.min() / 5

    def int8_error(path: Path) -> float:
        quantised = path.with_suffix(".int8.onnx")
        quantize_dynamic(path, quantised, weight_type=QuantType.QInt8, per_channel=True)
        want = _run(tmp_path / "fp32.onnx", x)[0]
        return float(np.abs(_run(quantised, x)[0] - want).mean() / np.abs(want).mean())

    assert int8_error(smoothed) < 0.5 * int8_error(tmp_path / "fp32.onnx")


def test_alpha_zero_leaves_the_activations_alone(tmp_path: Path) -> None:
    smoothed = _smooth(tmp_path, alpha=0.0)
    graph = onnx.load(str(smoothed)).graph
    inverse = next(
        numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("smooth_inv")
    )
    original = onnx.load(str(tmp_path / "fp32.onnx")).graph.initializer
    weights = {i.name: numpy_helper.to_array(i) for i in original}
    # s = 1 / max|W_j·|: activations are only divided by the weights' row ranges.
    w_max = np.maximum(np.abs(weights["A"]).max(axis=1), np.abs(weights["B"]).max(axis=1))
    np.testing.assert_allclose(inverse, w_max, rtol=1e-5)


def test_a_bad_alpha_is_refused_and_no_match_leaves_the_graph_as_it_was(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="alpha"):
        _smooth(tmp_path, alpha=1.5)
    # Another architecture's node names: nothing to smooth, the graph is only copied.
    untouched = _smooth(tmp_path, patterns=("/nothing$",), want=0)
    graph = onnx.load(str(untouched)).graph
    assert not [n for n in graph.node if n.op_type == "Mul"]
    x = _activations(seed=4)
    for want, got in zip(_run(tmp_path / "fp32.onnx", x), _run(untouched, x), strict=True):
        np.testing.assert_array_equal(got, want)
