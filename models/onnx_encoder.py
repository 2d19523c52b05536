"""sentence-transformers models on ONNX Runtime, exported and quantised here (no optimum).

Why not ``SentenceTransformer(backend="onnx")``: that path needs optimum-onnx, whose
transformers pin conflicts with the sentence-transformers release this project uses. The steps
it would take are short with the libraries themselves:

1. **Export** (:func:`export_model`): the whole ``SentenceTransformer`` module chain (the
   transformer, its pooling and, when the model has one, its ``Normalize``) is traced with
   torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``: it needs no
   onnxscript, and BERT-style encoders trace without data-dependent branches), with dynamic
   batch and sequence axes. The exported graph is checked against the torch model on texts of
   different lengths before it is kept.
2. **Quantisation** (backend ``onnx-int8``): ``onnxruntime.quantization.quantize_dynamic``,
   int8 weights per output channel, activations quantised per batch at run time. Only the
   MatMuls with a constant weight are quantised (the embeddings and the attention products stay
   fp32). ``reduce_range`` keeps weights to 7 bits: on CPUs without VNNI (AVX2 only, like the
   reference machine) the u8×s8 kernel sums pairs into saturating int16, and with 8-bit weights
   the cosine to fp32 fell to 0.85 on short item texts; 7 bits and per-channel scales give 0.99.
   The FFN output MatMuls stay fp32 (:data:`INT8_QUANTISATION`): of the layers tried, they
   move nearest-neighbour agreement with fp32 most per unit of speed given up. Before
   quantising, the other MatMuls' inputs are smoothed (SmoothQuant, models/smooth_quant.py):
   a few LayerNorm channels run far wider than the rest, and one int8 scale per batch would
   leave the others a few steps.
3. **Tokenisation**: the model's own fast tokenizer (``tokenizers``), saved next to the graph,
   so the torch path and this one split text identically.

The exported files are made once per model and backend in a cache folder (never in the
repository), written to a temporary folder and renamed into place, so two processes exporting
at once never see half a file. :class:`OnnxSentenceModel` loads them into an
``onnxruntime.InferenceSession``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np

from recstream.models.cpu_budget import usable_cpus
from recstream.models.errors import ModelError

__all__ = [
    "INT8_QUANTISATION",
    "ONNX_BACKENDS",
    "OnnxSentenceModel",
    "backend_variant",
    "export_dir_for",
    "export_model",
]

# Backend name → whether its weights are quantised to int8.
ONNX_BACKENDS: Final = {"onnx": False, "onnx-int8": True}
# How backend onnx-int8 quantises (`quantize_dynamic`'s arguments; `exclude`: regular
# expressions of MatMul node names kept in fp32; `smooth`: SmoothQuant before quantising, see
# models/smooth_quant.py). Kept: the FFN output MatMuls in fp32 (their input is the GELU output:
# of the layers tried they moved neighbour agreement most per unit of speed, and smoothing
# them made it worse), the rest 7-bit per-channel, the inputs of the query/key/value and FFN
# input MatMuls smoothed at alpha 0.5. README (Embedding backends) has the variants measured.
# The tag of this config is part of the export folder and of the model id, so vectors or files
# made under another config are never reused.
INT8_QUANTISATION: Final[dict[str, Any]] = {
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "op_types_to_quantize": ["MatMul"],
    "exclude": [r"/layer\.\d+/output/dense/MatMul$"],
    "smooth": {
        "alpha": 0.5,
        "nodes": [r"/attention/self/(query|key|value)/MatMul$", r"/intermediate/dense/MatMul$"],
    },
}
_FORMAT: Final = 1  # bump when the exported files change meaning; old folders are re-exported
_GRAPH: Final = "model.onnx"
_TOKENIZER: Final = "tokenizer.json"
_META: Final = "meta.json"
# Texts the exported graph is checked on: lengths from one word to the token limit, so that a
# shape specialised while tracing would show up as a wrong vector.
_CHECK_TEXTS: Final = (
    "cat",
    "Trail runner 3. Categories: Shoes, Running. Light shoe for long runs.",
    "naïve café 日本語 🙂",
    " ".join(f"word{i}" for i in range(400)),
)
_CHECK_MIN_COSINE: Final = {"onnx": 0.9999, "onnx-int8": 0.95}
# SmoothQuant's calibration batch: the check texts and a few item and search texts. Only each
# channel's maximum is read, and the wide channels are the model's own (these four check texts
# alone gave the same neighbour agreement on MovieLens titles as 500 held-out titles did).
_CALIBRATION_TEXTS: Final = (
    *_CHECK_TEXTS,
    "The Matrix (1999). Categories: Action, Sci-Fi, Thriller.",
    "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours.",
    "cheap noise cancelling headphones",
    "A quiet drama about two sisters who inherit a vineyard in the south of France.",
    "USB-C charger 65W",
    "Children's picture book about a bear who learns to swim. Categories: Books, Kids.",
)


def backend_variant(backend: str) -> str:
    """``backend``, with the tag of its quantisation config for a quantised one
    (``onnx-int8-q1a2b3c``): what export folders and model ids are keyed by."""
    if not ONNX_BACKENDS.get(backend):
        return backend
    text = json.dumps(INT8_QUANTISATION, sort_keys=True)
    return f"{backend}-q{hashlib.sha256(text.encode('utf-8')).hexdigest()[:6]}"


def export_dir_for(cache_dir: str | Path, model_name: str, model_path: str, backend: str) -> Path:
    """Folder of one model's export for ``backend`` under ``cache_dir``.

    Keyed by the model's name (readable) and a hash of its resolved path (two folders with the
    same name are different models), then by backend and quantisation config
    (:func:`backend_variant`).
    """
    resolved = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{model_name}-{digest}" / backend_variant(backend)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    complete = all((folder / name).is_file() for name in (_GRAPH, _TOKENIZER))
    if not complete or not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        return None
    if ONNX_BACKENDS.get(str(meta.get("backend"))) and meta.get("quantisation") != json.loads(
        json.dumps(INT8_QUANTISATION)
    ):
        return None  # quantised under another config: made again, never reused
    return meta


def export_model(
    model_path: str,
    folder: Path,
    backend: str,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export the sentence-transformers model at ``model_path`` into ``folder`` (see module doc).

    Returns the metadata written to ``meta.json``. Does nothing but read it when ``folder``
    already holds a complete export of the current format.

    Raises:
        ModelError: unknown backend, a model that cannot be loaded or exported, or an export
            whose vectors disagree with the torch model's.
    """
    if backend not in ONNX_BACKENDS:
        raise ModelError(f"not an ONNX backend: {backend!r} (one of {tuple(ONNX_BACKENDS)})")
    meta = _read_meta(folder)
    if meta is not None:
        return meta
    say = log or (lambda _msg: None)
    say(
        f"exporting {model_path} to ONNX ({backend}) in {folder}; once per model and backend, "
        "about a minute on 2 CPUs"
    )
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        meta = _export_into(model_path, tmp, backend)
        try:
            tmp.rename(folder)
        except OSError:
            # Another process finished first (the folder exists now): use its export.
            done = _read_meta(folder)
            if done is None:
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
            else:
                meta = done
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"ONNX export ready in {time.perf_counter() - started:.1f} s: {folder}")
    return meta


def _export_into(model_path: str, out: Path, backend: str) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        st = SentenceTransformer(model_path, device="cpu")
    except Exception as exc:  # the library raises OSError, ValueError, RuntimeError, ...
        raise ModelError(f"could not load model {model_path!r} for the ONNX export: {exc}") from exc
    st.eval()
    hf_tokenizer: Any = st.tokenizer
    backend_tokenizer = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend_tokenizer is None:
        raise ModelError(f"model {model_path!r} has no fast tokenizer; the ONNX path needs one")
    input_names = [
        n
        for n in ("input_ids", "attention_mask", "token_type_ids")
        if n in hf_tokenizer.model_input_names
    ]
    max_seq_length = int(st.max_seq_length or 512)
    dim = st.get_embedding_dimension()
    if not dim:
        raise ModelError(f"model {model_path!r} does not report an embedding dimension")
    first: Any = st[0]
    config = getattr(getattr(first, "auto_model", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)

    _write_graph(st, input_names, out, backend, model_path)

    tokenizer = type(backend_tokenizer).from_str(backend_tokenizer.to_str())
    tokenizer.no_padding()  # padding is done per batch, to the batch's longest text
    tokenizer.no_truncation()  # truncation is set at load time, from max_seq_length
    tokenizer.save(str(out / _TOKENIZER))
    pad_id = hf_tokenizer.pad_token_id
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "backend": backend,
        "source": str(model_path),
        "dim": int(dim),
        "max_seq_length": max_seq_length,
        "max_positions": int(positions) if isinstance(positions, int) else None,
        "input_names": input_names,
        "pad_id": int(pad_id) if pad_id is not None else 0,
        "do_lower_case": bool(getattr(first, "do_lower_case", False)),
        "quantisation": INT8_QUANTISATION if ONNX_BACKENDS[backend] else None,
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": _onnxruntime_version(),
        },
    }
    (out / _META).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    _verify_export(st, out, backend, max_seq_length, model_path)
    return meta


def _write_graph(st: Any, input_names: list[str], out: Path, backend: str, model_path: str) -> None:
    """Export token ids → sentence embedding (every module of the model) to `out`, int8
    quantised for the int8 backend; ModelError when torch's exporter or the quantiser fail."""
    import torch

    class _Graph(torch.nn.Module):
        """Token ids → sentence embedding, through every module of the model."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = dict(zip(input_names, tensors, strict=True))
            return self.model(features)["sentence_embedding"]

    graph = _Graph(st).eval()
    # A padded batch of two, so that neither axis is traced at size one.
    sample = st.tokenize(["a b c d", "a"])
    args = tuple(sample[name] for name in input_names)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic["sentence_embedding"] = {0: "batch"}
    fp32_path = out / ("model-fp32.onnx" if ONNX_BACKENDS[backend] else _GRAPH)
    try:
        with torch.inference_mode(), warnings.catch_warnings(), _quiet_root_log():
            # The tracer warns about every Python-level shape test it freezes; the check below
            # (texts of 1 to 256 tokens) is what tells whether freezing them was right.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                args,
                str(fp32_path),
                input_names=input_names,
                output_names=["sentence_embedding"],
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,
            )
        if ONNX_BACKENDS[backend]:
            smoothed = out / "model-smoothed.onnx"
            _smooth(st, input_names, fp32_path, smoothed, INT8_QUANTISATION["smooth"])
            fp32_path.unlink()
            _quantise(smoothed, out / _GRAPH, INT8_QUANTISATION)
            smoothed.unlink()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"exporting {model_path!r} to ONNX ({backend}) failed: {exc}") from exc


def _smooth(
    st: Any, input_names: list[str], source: Path, target: Path, config: dict[str, Any]
) -> None:
    """SmoothQuant ``source`` into ``target``, calibrated on :data:`_CALIBRATION_TEXTS`."""
    from recstream.models.smooth_quant import smooth_activations

    batch = st.tokenize(list(_CALIBRATION_TEXTS))
    feeds = {name: batch[name].numpy() for name in input_names}
    smoothed = smooth_activations(
        source,
        target,
        feeds,
        batch["attention_mask"].numpy(),
        alpha=float(config["alpha"]),
        patterns=list(config["nodes"]),
    )
    if not smoothed:  # not a BERT-style graph: quantised as it is, expect a lower agreement
        logging.getLogger(__name__).warning(
            "no MatMul of %s matches the SmoothQuant patterns %s; quantising without smoothing",
            source.name,
            list(config["nodes"]),
        )


def _quantise(source: Path, target: Path, config: dict[str, Any]) -> None:
    """Dynamic int8 quantisation of ``source`` into ``target`` under ``config`` (the shape of
    :data:`INT8_QUANTISATION`); nodes whose names match one of ``exclude`` stay fp32."""
    import re

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    patterns = [re.compile(p) for p in config.get("exclude", ())]
    names = [n.name for n in onnx.load(str(source), load_external_data=False).graph.node]
    excluded = [n for n in names if any(p.search(n) for p in patterns)]
    with _quiet_root_log():
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType[config["weight_type"]],
            per_channel=bool(config["per_channel"]),
            reduce_range=bool(config["reduce_range"]),
            op_types_to_quantize=list(config["op_types_to_quantize"]),
            nodes_to_exclude=excluded,
        )


def _verify_export(st: Any, out: Path, backend: str, max_seq_length: int, model_path: str) -> None:
    """ModelError unless the exported graph gives the torch model's vectors (int8: close)."""
    import torch

    # The exported graph must give the torch model's vectors (int8: close to them).
    check = OnnxSentenceModel(out, max_seq_length=max_seq_length, num_threads=1)
    got = check.encode(list(_CHECK_TEXTS), batch_size=len(_CHECK_TEXTS))
    with torch.inference_mode():
        want = np.asarray(st.encode(list(_CHECK_TEXTS), convert_to_numpy=True), np.float32)
    cos = np.sum(_unit(got) * _unit(want), axis=1)
    if not np.all(cos >= _CHECK_MIN_COSINE[backend]):
        raise ModelError(
            f"the ONNX export ({backend}) of {model_path!r} disagrees with the torch model: "
            f"cosines {np.round(cos, 4).tolist()}"
        )


@contextlib.contextmanager
def _quiet_root_log() -> Iterator[None]:
    """Hide root-logger warnings meanwhile: onnxruntime.quantization logs advice through the root
    logger ("consider pre-processing"), which a worker would print as if something were wrong."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


class OnnxSentenceModel:
    """An exported model (see :func:`export_model`) on ONNX Runtime's CPU provider.

    Args:
        folder: the export folder (``model.onnx``, ``tokenizer.json``, ``meta.json``).
        max_seq_length: tokens kept per text; ``None`` keeps the model's own limit.
        num_threads: CPU threads: on the CPU provider, that many runs at once, each on one
            thread (intra-op 1); ``None``: the CPUs this process may use. Concurrent runs
            never wait for each other, where an intra-op pool meets at every operator and
            stalls whenever another thread takes one of its cores (README: Measured figures).
        providers: ONNX Runtime execution providers, in order of preference.

    Raises:
        ModelError: the folder holds no complete export, or ONNX Runtime cannot load it.
    """

    def __init__(
        self,
        folder: str | Path,
        max_seq_length: int | None = None,
        num_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._folder = Path(folder)
        meta = _read_meta(self._folder)
        if meta is None:
            raise ModelError(f"{self._folder} holds no complete ONNX export")
        self._meta = meta
        self._dim = int(meta["dim"])
        self._max_seq_length = int(max_seq_length or meta["max_seq_length"])
        self._input_names: list[str] = list(meta["input_names"])
        self._pad_id = int(meta["pad_id"])
        self._lower = bool(meta["do_lower_case"])
        self._tokenizer = Tokenizer.from_file(str(self._folder / _TOKENIZER))
        self._tokenizer.enable_truncation(self._max_seq_length)

        on_cpu = list(providers)[:1] == ["CPUExecutionProvider"]
        threads = num_threads or usable_cpus()
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="onnx-run")
            if on_cpu and threads > 1
            else None
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1 if on_cpu else threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads would otherwise spin for a while after each run, taking the CPU
        # from the event loop and the broker between batches (measured no slower without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self._folder / _GRAPH), options, providers=list(providers)
            )
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ...
            raise ModelError(f"ONNX Runtime could not load {self._folder}: {exc}") from exc

    @property
    def dim(self) -> int:
        """Dimensions of each vector."""
        return self._dim

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text."""
        return self._max_seq_length

    @property
    def max_positions(self) -> int | None:
        """The model's number of position embeddings, when known."""
        value = self._meta.get("max_positions")
        return int(value) if value is not None else None

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text (int64, truncated to :attr:`max_seq_length`, unpadded)."""
        prepared = [t.strip() for t in texts]  # as sentence-transformers does
        if self._lower:
            prepared = [t.lower() for t in prepared]
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tokenizer.encode_batch(prepared)]

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed ``texts`` (the model's own output: unit rows when it ends in ``Normalize``).

        Texts are sorted by token count and cut into batches of ``batch_size``, each padded to
        its longest text, so short texts do not pay for long ones; rows come back in the
        caller's order.

        Returns:
            float32 array ``(len(texts), dim)``.
        """
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        runs = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

        def run(rows: np.ndarray) -> None:
            out[rows] = self._run(rows, ids, lengths)

        if self._pool is None or len(runs) == 1:
            for rows in runs:
                run(rows)
        else:
            list(self._pool.map(run, runs))  # list(): re-raises a run's error here
        return out

    def _run(self, rows: np.ndarray, ids: list[np.ndarray], lengths: np.ndarray) -> np.ndarray:
        """One session run over the texts ``rows``, padded to the longest of them."""
        width = int(lengths[rows].max())
        input_ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            n = int(lengths[i])
            input_ids[r, :n] = ids[i]
            mask[r, :n] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (result,) = self._session.run(["sentence_embedding"], feeds)
        return np.asarray(result, dtype=np.float32)
