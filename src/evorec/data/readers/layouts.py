"""Layouts: how a reader recognises the variants of its dataset from a file's first rows.

Real copies of one public dataset come with different headers (``user_id`` / ``userId`` /
``User_ID``), orders, extra columns, the date split into parts, with or without a header. A
reader declares the *roles* it needs (the user column, the item column...) with the names each
goes by in the known copies, and finds them in the file's header by a normalised name (case,
``_``, ``-``, spaces and dots ignored). Headerless layouts are declared by the shape of their
values (one pattern per field).

The sniffer (``evorec.data.sniff``) builds a :class:`Sample` of a file's first rows (dialect and
types from DuckDB's CSV sniffer) and asks every reader's ``recognise`` for :class:`Recognition`s:
a full one names the format and layout; partial ones are the "closest layouts" of an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SampleKind = Literal["delimited", "jsonl", "parquet"]
HEADERLESS_MIN_SHARE = 0.9  # share of sample rows a headerless layout's patterns must fit


def norm_name(name: str) -> str:
    """``User_ID`` / ``userId`` / ``user id`` -> ``userid``: header names compared this way."""
    return re.sub(r"[^0-9a-z\u0080-\uffff]", "", name.strip().strip('"').lower())


@dataclass(frozen=True)
class Role:
    """A column a reader needs (or can use), and the names it has in the known copies."""

    name: str
    aliases: tuple[str, ...]
    required: bool = True


def resolve(header: list[str], roles: tuple[Role, ...]) -> dict[str, str]:
    """Role name -> the header's column for it (the first alias present wins; each column used once)."""
    by_norm: dict[str, str] = {}
    for col in header:
        by_norm.setdefault(norm_name(col), col)
    out: dict[str, str] = {}
    used: set[str] = set()
    for role in roles:
        for alias in role.aliases:
            col = by_norm.get(norm_name(alias))
            if col is not None and col not in used:
                out[role.name] = col
                used.add(col)
                break
    return out


def missing_roles(found: dict[str, str], roles: tuple[Role, ...]) -> list[Role]:
    return [r for r in roles if r.required and r.name not in found]


def describe_roles(roles: tuple[Role, ...]) -> str:
    """``user_id (or userId, UserID), item_id, ...`` for messages."""
    parts = []
    for r in roles:
        if not r.required:
            continue
        alt = [a for a in r.aliases[1:4]]
        parts.append(r.aliases[0] + (f" (or {', '.join(alt)})" if alt else ""))
    return ", ".join(parts)


@dataclass
class Sample:
    """A file's first rows, as the sniffer saw them. Fields are text."""

    path: Path
    kind: SampleKind
    delimiter: str | None = None  # delimited text: the separator ("::" for the MovieLens .dat files)
    header: list[str] | None = None  # column names when the file has a header (or Parquet / JSON keys)
    rows: list[list[str | None]] = field(default_factory=list)  # the first rows, field by field
    lines: list[str] = field(default_factory=list)  # the first raw lines (text files)
    types: dict[str, str] = field(default_factory=dict)  # column -> DuckDB's detected type
    formats: dict[str, str] = field(default_factory=dict)  # "timestamp"/"date" -> detected strptime format
    records: list[dict] = field(default_factory=list)  # JSON lines: the parsed objects

    def column_values(self, name: str, limit: int = 200) -> list[str]:
        """Non-empty sample values of a column (by header name)."""
        if self.header is None or name not in self.header:
            return []
        i = self.header.index(name)
        return [r[i] for r in self.rows[:limit] if i < len(r) and r[i] not in (None, "")]


@dataclass(frozen=True)
class Recognition:
    """A reader's verdict on a sample: which of its layouts it is, or how close it came."""

    format: str
    layout: str  # a readable name of the variant ("user_log, month/day + action + profile")
    found: dict[str, str] = field(default_factory=dict)  # role -> the file's column
    missing: tuple[str, ...] = ()  # required roles not found (empty: recognised)
    options: dict[str, str] = field(default_factory=dict)  # options the file is read with (shown in the command)
    needs: tuple[str, ...] = ()  # options the user must give (e.g. a start date the file lacks)
    notes: tuple[str, ...] = ()  # what the reader will assume (e.g. the year of a month/day date)
    specificity: int = 0  # how many columns / fields the match used: more is a closer fit

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def share(self) -> float:
        n = len(self.found) + len(self.missing)
        return len(self.found) / n if n else 0.0


def header_recognition(
    fmt: str, layout: str, sample: Sample, roles: tuple[Role, ...], delimiters: tuple[str, ...], **kw
) -> Recognition | None:
    """The usual case: a delimited file with a header, columns found by role; None if unrelated."""
    if sample.kind != "delimited" or sample.header is None or sample.delimiter not in delimiters:
        return None
    found = resolve(sample.header, roles)
    if not found:
        return None
    miss = tuple(r.aliases[0] for r in missing_roles(found, roles))
    return Recognition(fmt, layout, found, miss, specificity=len(found), **kw)


def headerless_fit(sample: Sample, delimiter: str, patterns: tuple[str, ...]) -> bool:
    """Do (almost) all sample rows of a headerless file have these fields, matching the patterns?"""
    if sample.kind != "delimited" or sample.header is not None or sample.delimiter != delimiter or not sample.rows:
        return False
    regs = [re.compile(p) for p in patterns]
    ok = sum(
        1
        for r in sample.rows
        if len(r) == len(regs) and all(reg.fullmatch((v or "").strip()) for reg, v in zip(regs, r))
    )
    return ok >= HEADERLESS_MIN_SHARE * len(sample.rows)


INT = r"-?[0-9]+"
NUM = r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?"
UNIX_S = r"[0-9]{9,10}(\.[0-9]*)?"
