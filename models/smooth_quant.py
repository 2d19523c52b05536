"""SmoothQuant for dynamic int8: per-channel activation ranges moved into the weights.

Dynamic quantisation gives each MatMul input one int8 scale per batch (per tensor). In BERT-style
encoders a few hidden channels of the LayerNorm outputs run far wider than the rest, so that
one scale leaves the other channels a handful of int8 steps and most of the rounding error.
SmoothQuant (Xiao et al., 2023, "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models") rewrites ``X · W`` as ``(X / s) · (diag(s) · W)``:
the same product in exact arithmetic, with ``s_j = max|X_j|^α / max|W_j·|^(1−α)`` so that the
channels of ``X / s`` have similar ranges and the weights, quantised per output channel, take
up the difference.

Here ``X / s`` is an explicit ``Mul`` in front of the MatMuls that read ``X`` (the LayerNorm
outputs also feed the residual connection, so ``s`` cannot be folded into the LayerNorm).
``max|X_j|`` comes from one run of the fp32 graph over a few calibration texts: the wide
channels are a property of the model, not of the texts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstream.models.errors import ModelError

__all__ = ["smooth_activations"]

_FLOOR = 1e-5  # a channel that is never non-zero keeps scale ~1 instead of dividing by zero


def smooth_activations(
    source: Path,
    target: Path,
    feeds: Mapping[str, np.ndarray],
    mask: np.ndarray,
    *,
    alpha: float,
    patterns: Sequence[str],
) -> int:
    """Write ``source`` to ``target`` with the inputs of the matching MatMuls smoothed.

    Args:
        source: an fp32 ONNX graph.
        target: where the smoothed graph goes (same outputs up to float rounding).
        feeds: one calibration batch, the graph's inputs by name.
        mask: ``(batch, tokens)``, 1 where a token is real; padding is left out of the ranges.
        alpha: migration strength in ``[0, 1]``: 0 leaves activations alone, 1 moves their
            whole range into the weights.
        patterns: regular expressions of MatMul node names to smooth; only MatMuls whose
            weight is a constant are touched, and MatMuls that share an input share its scale.

    Returns:
        How many activations were smoothed; 0 when no MatMul matched (another architecture's
        node names): ``target`` is then ``source`` unchanged, quantised as before.

    Raises:
        ModelError: ``alpha`` out of range.
    """
    import onnx

    if not 0.0 <= alpha <= 1.0:
        raise ModelError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    model = onnx.load(str(source))
    groups = _consumers(model, patterns)
    if groups:
        ranges = _activation_ranges(model, list(groups), feeds, mask)
        for name, nodes in groups.items():
            _smooth_one(model, name, nodes, ranges[name], alpha)
    onnx.save(model, str(target))
    return len(groups)


def _consumers(model: Any, patterns: Sequence[str]) -> dict[str, list[Any]]:
    """Activation name → the matching MatMuls that read it (each with a constant weight)."""
    compiled = [re.compile(p) for p in patterns]
    constants = {i.name for i in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in constants:
            continue
        if any(p.search(node.name) for p in compiled):
            groups.setdefault(node.input[0], []).append(node)
    return groups


def _activation_ranges(
    model: Any, names: list[str], feeds: Mapping[str, np.ndarray], mask: np.ndarray
) -> dict[str, np.ndarray]:
    """``max|X_j|`` over the real tokens of the calibration batch, per activation ``X``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    outputs = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    real = np.asarray(mask).astype(bool)
    return {
        name: np.abs(np.asarray(out)[real]).max(axis=0)
        for name, out in zip(names, outputs, strict=True)
    }


def _smooth_one(model: Any, name: str, nodes: list[Any], act_max: np.ndarray, alpha: float) -> None:
    """Insert ``name · (1/s)`` before ``nodes`` and scale their weights' rows by ``s``."""
    from onnx import helper, numpy_helper

    constants = {i.name: i for i in model.graph.initializer}
    weights = [numpy_helper.to_array(constants[n.input[1]]) for n in nodes]  # (in, out) each
    w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    scale = (
        np.maximum(act_max, _FLOOR) ** alpha / np.maximum(w_max, _FLOOR) ** (1.0 - alpha)
    ).astype(np.float32)
    inverse = numpy_helper.from_array((1.0 / scale).astype(np.float32), name=f"{name}/smooth_inv")
    model.graph.initializer.append(inverse)
    smoothed = f"{name}/smoothed"
    first = min(list(model.graph.node).index(n) for n in nodes)
    model.graph.node.insert(
        first, helper.make_node("Mul", [name, inverse.name], [smoothed], name=f"{name}/smooth")
    )
    for node, weight in zip(nodes, weights, strict=True):
        node.input[0] = smoothed
        constants[node.input[1]].CopyFrom(
            numpy_helper.from_array(
                (weight * scale[:, None]).astype(np.float32), name=node.input[1]
            )
        )
