"""A tiny real dataset for model tests: MovieLens-100K (RecBole atomic file), leave-one-out."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ML100K = SHARED / "movielens_100k_recbole" / "ml-100k.inter"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(SequenceData, Split) of ML-100K with leave-one-out; items get their genre as category."""
    if not ML100K.exists():
        pytest.skip(f"real data not found: {ML100K}")
    from evorec.data.ingest import ingest_file
    from evorec.data.prepare import PrepareConfig, prepare
    from evorec.data.sequences import SequenceData
    from evorec.data.splits import load_split

    d = tmp_path_factory.mktemp("tiny")
    store = d / "s.duckdb"
    ingest_file(store, ML100K, "recbole", "ml100k", pseudonymize=False)
    out = d / "prepared"
    prepare(store, "ml100k", PrepareConfig(), out)
    return SequenceData(out), load_split(out / "split")
