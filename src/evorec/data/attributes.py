"""Item attributes as tokens: every node of an item's category path(s) and its brand.

A model with ``side.attributes`` on adds the mean of its attribute embeddings to an item's
vector (``evorec.models.layers.embeddings.EventEmbedding``). This module turns the store's
``items`` table into the (n_items, width) token matrix the model keeps as a buffer.

Tokens of one item (the latest ingest wins per field, as for item text):
- ``category_path``: alternatives separated by ``|`` (MovieLens genres, the S3-Rec attribute
  ids), each a hierarchy separated by `` > `` (Amazon): every prefix of a hierarchy is a token
  ("Beauty", "Beauty > Skin Care", ...), so a leaf name under two parents stays two tokens;
- ``category_id`` when there is no path (a flat category, e.g. ReChorus' ``i_category``): one token;
- ``brand``: one token ``brand=<name>``.
Duplicates are dropped, order is kept; row 0 (padding) and items without attributes are all 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evorec.errors import InputError

PATH_SEP = " > "
ALT_SEP = "|"
MAX_PER_ITEM = 32  # tokens kept per item (the first ones); a deeper taxonomy is cut, with a log line by the caller


def tokens_of(category_path: str | None, brand: str | None, category_id: str | None = None) -> list[str]:
    """Attribute tokens of one item (see the module doc)."""
    out: list[str] = []
    for alt in (category_path or "").split(ALT_SEP):
        parts = [p.strip() for p in alt.split(PATH_SEP.strip()) if p.strip()]
        for i in range(len(parts)):
            out.append(PATH_SEP.join(parts[: i + 1]))
    if not out and category_id is not None and category_id.strip():
        out.append(category_id.strip())  # a flat category (no path), e.g. ReChorus i_category
    if brand is not None and brand.strip():
        out.append(f"brand={brand.strip()}")
    return list(dict.fromkeys(out))


def item_attribute_tokens(store_path: str | Path, dataset: str, item_ids: Sequence[str]) -> list[list[str]]:
    """Attribute tokens of each item id, from the store's ``items`` table ([] where none)."""
    from evorec.data.store import latest_item_fields

    rows = latest_item_fields(store_path, dataset, ("category_path", "brand", "category_id"))
    by_id = {item_id: tokens_of(path, brand, cat) for item_id, path, brand, cat in rows}
    return [by_id.get(i, []) for i in item_ids]


def attribute_matrix(token_lists: Sequence[Sequence[str]], max_per_item: int = MAX_PER_ITEM) -> tuple[np.ndarray, list[str], int]:
    """(len(token_lists) + 1, width) int64 token indices (row 0 = padding, 0 = no token), the
    token vocabulary (index i + 1 is ``vocab[i]``) and how many items had tokens cut.

    ``token_lists[i]`` belongs to the item of vocabulary index ``i + 1`` (``SequenceData.items``).
    Tokens are numbered by first appearance, so the same items give the same matrix."""
    if max_per_item < 1:
        raise InputError(f"max_per_item must be at least 1, got {max_per_item}")
    index: dict[str, int] = {}
    rows: list[list[int]] = [[]]
    cut = 0
    for toks in token_lists:
        if len(toks) > max_per_item:
            cut += 1
            toks = toks[:max_per_item]
        rows.append([index.setdefault(t, len(index) + 1) for t in toks])
    width = max(1, max(len(r) for r in rows))
    m = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        m[i, : len(r)] = r
    return m, list(index), cut
