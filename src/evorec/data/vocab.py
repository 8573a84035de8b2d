"""Stable id <-> index vocabularies for users, items and categories.

Index 0 is padding / unknown; real ids get 1..n in ascending order of the id *string*
(binary / code-point order, the same in Python, Arrow, DuckDB and Spark), so two runs on the
same data give identical vocabularies. Behaviours use the fixed ``evorec.types.BEHAVIOR_INDEX``.

On disk a vocabulary is a Parquet file with one string column ``id``; row ``i`` has index
``i + 1``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evorec.errors import InputError
from evorec.types import BEHAVIOR_INDEX, BEHAVIORS

PAD = 0
"""Index of padding and of every unknown id."""


class VocabError(InputError):
    """A vocabulary is malformed (unsorted, duplicated or null ids)."""


class Vocab:
    """An immutable sorted list of ids; ``lookup`` maps ids to indices (unknown -> 0)."""

    def __init__(self, ids: Sequence[str] | pa.Array | pa.ChunkedArray, *, name: str = "vocab") -> None:
        arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), type=pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.type != pa.string():
            arr = arr.cast(pa.string())
        if arr.null_count:
            raise VocabError(f"{name} vocabulary has null ids")
        if len(arr) > 1 and not pc.all(pc.less(arr[:-1], arr[1:])).as_py():
            raise VocabError(f"{name} vocabulary is not strictly increasing (unsorted or duplicated ids)")
        self.name = name
        self._ids: pa.Array = arr

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_ids(cls, ids: Iterable[str | None], *, name: str = "vocab") -> Vocab:
        """Build from any ids: nulls dropped, duplicates removed, sorted by id string."""
        arr = pa.array(list(ids), type=pa.string()) if not isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids
        uniq = pc.unique(pc.drop_null(arr))
        if isinstance(uniq, pa.ChunkedArray):
            uniq = uniq.combine_chunks()
        return cls(pc.take(uniq, pc.sort_indices(uniq)), name=name)

    @classmethod
    def from_table(cls, table: ir.Table, column: str, *, name: str | None = None) -> Vocab:
        """The sorted distinct non-null values of ``table[column]`` (sorted again in Arrow so
        the order never depends on a backend's collation)."""
        col = table[column].cast("string").name("id")
        distinct = table.select(col).filter(lambda t: t.id.notnull()).distinct()
        ids = distinct.to_pyarrow().column("id")
        return cls.from_ids(ids, name=name or column)

    # -- access ---------------------------------------------------------------------------

    @property
    def ids(self) -> pa.Array:
        """Real ids in index order (``ids[i]`` has index ``i + 1``)."""
        return self._ids

    def __len__(self) -> int:
        """Number of real ids (without padding)."""
        return len(self._ids)

    @property
    def size(self) -> int:
        """Embedding table size: real ids plus the padding/unknown row 0."""
        return len(self._ids) + 1

    def lookup(self, ids: Iterable[str | None] | pa.Array | str) -> np.ndarray:
        """Indices of ``ids`` (int64); unknown ids and nulls map to :data:`PAD`."""
        if isinstance(ids, str):
            ids = [ids]
        arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), type=pa.string())
        if arr.type != pa.string():
            arr = arr.cast(pa.string())
        pos = pc.index_in(arr, value_set=self._ids)
        if isinstance(pos, pa.ChunkedArray):
            pos = pos.combine_chunks()
        return pc.fill_null(pc.add(pos.cast(pa.int64()), 1), PAD).to_numpy(zero_copy_only=False)

    def index_of(self, id_: str) -> int:
        return int(self.lookup([id_])[0])

    def reverse(self, indices: Iterable[int] | np.ndarray) -> list[str | None]:
        """Ids of ``indices``; :data:`PAD` and out-of-range indices give ``None``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        ok = (idx >= 1) & (idx <= len(self._ids))
        out: list[str | None] = [None] * len(idx)
        if ok.any():
            taken = pc.take(self._ids, pa.array(idx[ok] - 1)).to_pylist()
            for j, v in zip(np.flatnonzero(ok), taken):
                out[j] = v
        return out

    def id_of(self, index: int) -> str | None:
        return self.reverse([index])[0]

    def fingerprint(self) -> str:
        """Content hash of the ids in order (hex)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.name.encode())
        for start in range(0, len(self._ids), 1 << 16):
            h.update(b"\x00" + "\x00".join(self._ids[start : start + (1 << 16)].to_pylist()).encode())
        return h.hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._ids.equals(other._ids)

    def __repr__(self) -> str:
        return f"Vocab({self.name!r}, n={len(self)})"

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        pq.write_table(pa.table({"id": self._ids}), path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, name: str | None = None) -> Vocab:
        path = Path(path)
        ids = pq.read_table(path, columns=["id"]).column("id")
        return cls(ids, name=name or path.stem)


def behavior_indices(names: Iterable[str | None] | pa.Array) -> np.ndarray:
    """Map behaviour names to ``BEHAVIOR_INDEX`` (int8); unknown names and nulls give 0."""
    arr = names if isinstance(names, (pa.Array, pa.ChunkedArray)) else pa.array(list(names), type=pa.string())
    pos = pc.index_in(arr, value_set=pa.array(BEHAVIORS, type=pa.string()))
    if isinstance(pos, pa.ChunkedArray):
        pos = pos.combine_chunks()
    return pc.fill_null(pc.add(pos.cast(pa.int8()), 1), PAD).to_numpy(zero_copy_only=False).astype(np.int8)


def behavior_vocab() -> dict[str, int]:
    """The fixed behaviour vocabulary (name -> index, 0 = padding)."""
    return dict(BEHAVIOR_INDEX)


def vocab_table(vocab: Vocab, index_type: str = "int32") -> ir.Table:
    """A Vocab as an in-memory Ibis table (id, idx) to join against on any backend."""
    idx = np.arange(1, len(vocab) + 1, dtype=np.int64)
    return ibis.memtable(pa.table({"id": vocab.ids, "idx": pa.array(idx).cast(index_type)}))
