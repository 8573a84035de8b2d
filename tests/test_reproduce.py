"""`evorec benchmark reproduce`: the table's rows match configs/beauty, PopRec on the real file
lands on the leak-free number and the explanation reproduces the published one exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from evorec.cli.main import app
from evorec.experiments.reproduce import find_data, reproduce
from evorec.experiments.tables import tables

TABLES = tables()

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "data" / "amazon_s3rec_seq" / "Beauty.txt"


def test_table_rows_equal_the_example_configs():
    t = TABLES["s3rec-beauty"]
    for row in t.rows:
        doc = yaml.safe_load((ROOT / "configs" / "beauty" / f"{row.model}.yaml").read_text())
        assert doc["model"]["config"] == row.config, row.model
        assert doc["train"] == row.train, row.model
        assert doc["eval"] == t.eval and doc["prepare"] == t.prepare and doc["data"]["format"] == t.data["format"]


def test_bad_inputs(tmp_path):
    with pytest.raises(KeyError, match="unknown table 'nope'.*s3rec-beauty"):
        reproduce("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_data(TABLES["s3rec-beauty"], tmp_path / "missing.txt")
    with pytest.raises(KeyError, match="has rows"):
        reproduce("s3rec-beauty", tmp_path, data=BEAUTY if BEAUTY.exists() else None, models=["sasrec", "nope"])
    r = CliRunner().invoke(app, ["benchmark", "reproduce", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown table" in r.output


def test_poprec_row_on_the_real_file(tmp_path, monkeypatch):
    if not BEAUTY.exists():
        pytest.skip(f"real data not found: {BEAUTY}")
    monkeypatch.setenv("EVOREC_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(
        app, ["benchmark", "reproduce", "s3rec-beauty", "-m", "pop", "--out", str(tmp_path / "out"), "--data", str(BEAUTY),
              "--bootstrap", "200", "--json"],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    (row,) = res["rows"]
    m = row["metrics"]["HR@10"]
    assert m["published"] == 0.0152 and m["ci"][0] <= m["evorec"] <= m["ci"][1]
    assert m["evorec"] == pytest.approx(0.0110, abs=2e-4)  # leak-free counts: below the published number
    ex = res["poprec_explanation"]
    leaky = ex["whole file, test items included (leaks the targets)"]
    assert leaky["HR@10"] == pytest.approx(0.0152, abs=5e-5) and leaky["NDCG@10"] == pytest.approx(0.0068, abs=5e-5)
    assert "test targets included" in ex["conclusion"]
    # a second call reuses the finished run
    again = reproduce("s3rec-beauty", tmp_path / "out", data=BEAUTY, models=["pop"], bootstrap=200)
    assert again["rows"][0]["metrics"]["HR@10"]["evorec"] == m["evorec"]
