"""The data cache (evorec.experiments.cache): keyed by the source's content and the configs, taking
only the data and prepare configs; a second call reuses both the store and the prepared sequences."""

from __future__ import annotations

from pathlib import Path

import pytest

from evorec.data.prepare import PrepareConfig
from evorec.errors import MissingPathError
from evorec.experiments.cache import DataCache, source_path
from evorec.experiments.config import DataSourceConfig

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TAOBAO_CSV = DATA_DIR / "taobao_userbehavior_head84k" / "UserBehavior_head.csv"


def test_the_cache_is_keyed_by_content_and_config(tmp_path):
    if not TAOBAO_CSV.exists():
        pytest.skip(f"real data not found: {TAOBAO_CSV}")
    data = DataSourceConfig(path=str(TAOBAO_CSV), format="taobao", dataset="tb")
    loo = PrepareConfig.model_validate({"split": {"kind": "loo"}})
    cache = DataCache(tmp_path / "cache")
    first = cache.prepared(data, loo)
    stamps = (first.store.stat().st_mtime_ns, (first.seq.path / "meta.json").stat().st_mtime_ns)
    again = cache.prepared(data, loo)
    assert again.seq.fingerprint == first.seq.fingerprint and again.store == first.store == cache.store(data)
    assert (again.store.stat().st_mtime_ns, (again.seq.path / "meta.json").stat().st_mtime_ns) == stamps  # nothing redone
    other = cache.paths(data, PrepareConfig.model_validate({"clean": {"dedup": False}, "split": {"kind": "loo"}}))
    assert other.store == first.store and other.prepared != first.seq.path  # one store, a directory per prepare config
    raw = cache.paths(data.model_copy(update={"pseudonymize": False}), loo)
    assert raw.prepared != first.seq.path


def test_relative_sources_are_found_from_the_config_directory(tmp_path):
    (tmp_path / "configs" / "x").mkdir(parents=True)
    (tmp_path / "events.csv").write_text("u,i,1\n")
    data = DataSourceConfig(path="events.csv", format="csv", dataset="d", base_dir=str(tmp_path / "configs" / "x"))
    assert source_path(data) == tmp_path / "events.csv"  # a parent of the config's directory
    with pytest.raises(MissingPathError, match="data source not found"):
        source_path(data.model_copy(update={"path": "missing.csv"}))


def test_two_processes_preparing_one_source_at_once_take_turns(tmp_path):
    """Two jobs started together on a cold cache (e.g. the fp32 and bf16 runs of the CPU matrix):
    the second waits for the first's store instead of failing on DuckDB's file lock."""
    import subprocess
    import sys

    if not TAOBAO_CSV.exists():
        pytest.skip(f"real data not found: {TAOBAO_CSV}")
    code = (
        "import sys; from evorec.experiments.cache import DataCache; from evorec.data.prepare import PrepareConfig; "
        "from evorec.experiments.config import DataSourceConfig; "
        f"d = DataSourceConfig(path={str(TAOBAO_CSV)!r}, format='taobao', dataset='tb'); "
        "p = DataCache(sys.argv[1]).prepared(d, PrepareConfig.model_validate({'split': {'kind': 'loo'}})); "
        "print(p.seq.fingerprint)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].strip()  # one prepared cache, read by both
