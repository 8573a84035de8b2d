"""The same Ibis cleaning + ordering expressions give identical results on PySpark and DuckDB.

Runs Spark in local mode (``local[2]``) over a Parquet export of the Taobao events (with
planted duplicates), applies every cleaning step, and compares the cleaned, ordered events,
the removal report and the written sequence arrays byte for byte.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import make_taobao_store

from evorec.data.clean import (
    BotFilterConfig,
    CleanConfig,
    CollapseConfig,
    KCoreConfig,
    clean_events,
    open_store_events,
    order_events,
    select_dataset,
)
from evorec.data.sequences import write_sequences

pytestmark = pytest.mark.spark


def _spark_missing() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install pyspark)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime found (PySpark local mode needs java on PATH or JAVA_HOME)"
    return None


_reason = _spark_missing()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

CFG = CleanConfig(
    dedup=True,
    collapse=CollapseConfig(window_s=60),
    bots=BotFilterConfig(quantile=0.99),
    kcore=KCoreConfig(user_min=3, item_min=2),
)
COMPARE = ["user_id", "item_id", "ts_s", "behavior", "category_id", "value", "ingest_id", "source_row"]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
        .appName("evorec-parity")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # tiny data: compiling whole-stage code costs more than it saves
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A Taobao store with planted duplicates (one with NULL category) and its Parquet export."""
    d = tmp_path_factory.mktemp("parity")
    path = make_taobao_store(d / "store.duckdb")
    con = duckdb.connect(str(path))
    con.execute(
        """
        INSERT INTO events (dataset, user_id, item_id, ts, behavior, category_id, value, ingest_id, source_row)
        SELECT dataset, user_id, item_id, ts, behavior, category_id, value, 2, source_row
        FROM events WHERE source_row % 97 = 0
        """
    )
    con.execute("UPDATE events SET category_id = NULL WHERE source_row % 1000 = 0")
    parquet = d / "events.parquet"
    con.execute(f"COPY (SELECT * FROM events) TO '{parquet}' (FORMAT parquet)")
    con.close()
    return path, parquet


def test_spark_cleaning_and_sequences_match_duckdb(spark, stores, tmp_path):
    import ibis

    store_path, parquet = stores

    backend, events, time_kind = open_store_events(store_path, "taobao")
    with clean_events(events, CFG.model_copy(update={"materialize": False}), time_kind=time_kind) as dk:
        dk_rows = order_events(dk.events).select(*COMPARE).to_pyarrow()
        dk_report = dk.report()
        dk_seq = write_sequences(dk.events, tmp_path / "duckdb", dataset="taobao", time_kind=time_kind)
    backend.disconnect()

    scon = ibis.pyspark.connect(spark)
    sp_events = select_dataset(scon.read_parquet(str(parquet), table_name="evorec_events"), "taobao")
    # Same expressions; on Spark each step is cached as it is built (materialize, the default),
    # because Spark re-plans shared sub-plans on every read. DuckDB above ran fully lazily.
    sp_cfg = CFG.model_copy(update={"materialize": True})
    with clean_events(sp_events, sp_cfg, time_kind=time_kind) as sp:
        sp_rows = order_events(sp.events).select(*COMPARE).to_pyarrow()
        sp_report = sp.report()
        sp_seq = write_sequences(sp.events, tmp_path / "spark", dataset="taobao", time_kind=time_kind)

    # the planted duplicates and every other step did remove something
    assert all(s.events_removed > 0 for s in dk_report.steps[1:])
    assert sp.bot_threshold == pytest.approx(dk.bot_threshold, rel=1e-12)
    assert sp_report.model_dump(exclude={"bot_threshold"}) == dk_report.model_dump(exclude={"bot_threshold"})

    # cleaned, ordered events: identical row for row
    assert sp_rows.num_rows == dk_rows.num_rows > 0
    for col in COMPARE:
        assert sp_rows.column(col).to_pylist() == dk_rows.column(col).to_pylist(), col

    # sequences: identical arrays, vocabularies and fingerprints
    for arr in ("offsets", "item", "category", "behavior", "ts", "basket"):
        assert np.array_equal(getattr(sp_seq, arr), getattr(dk_seq, arr)), arr
    for voc in ("users", "items", "categories"):
        assert getattr(sp_seq, voc) == getattr(dk_seq, voc), voc
    assert sp_seq.fingerprint == dk_seq.fingerprint
    assert Path(sp_seq.path).name == "spark"
