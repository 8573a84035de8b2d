"""Published tables to reproduce (``evorec benchmark reproduce``), read from the package data in
``evorec/experiments/tables/*.yaml``: one file per table, its rows with the paper's numbers and
the hyperparameters that mirror ``configs/<dataset>/<model>.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

from evorec.types import JSONDoc


@dataclass
class Row:
    label: str  # the paper's name for the model
    model: str  # evorec registry name
    config: JSONDoc
    published: dict[str, float]  # e.g. {"HR@10": 0.0605, "NDCG@10": 0.0318}
    train: JSONDoc = field(default_factory=dict)


@dataclass
class Table:
    name: str
    title: str
    source: str
    relative_path: str  # under the data directory
    data: JSONDoc
    prepare: JSONDoc
    eval: JSONDoc
    protocol: str
    rows: list[Row]

    @classmethod
    def from_dict(cls, d: JSONDoc) -> Table:
        rows = [Row(r["label"], r["model"], dict(r.get("config") or {}), dict(r["published"]), dict(r.get("train") or {}))
                for r in d["rows"]]
        return cls(d["name"], d["title"], d["source"], d["relative_path"], d["data"], d["prepare"], d["eval"],
                   " ".join(str(d["protocol"]).split()), rows)


@cache
def tables() -> dict[str, Table]:
    """Every packaged table by name."""
    out = {}
    for f in sorted(resources.files("evorec.experiments").joinpath("tables").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".yaml"):
            t = Table.from_dict(yaml.safe_load(f.read_text()))
            out[t.name] = t
    return out
