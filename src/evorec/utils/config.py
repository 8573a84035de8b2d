"""Typed configs from YAML files plus ``--set key.sub=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evorec.errors import InputError

M = TypeVar("M", bound=BaseModel)


class ConfigError(InputError):
    """A config file or override is wrong; the message names the file and the field."""


def apply_overrides(data: dict[str, Any], overrides: dict[str, str] | list[str] | None) -> dict[str, Any]:
    """Set dotted keys (``train.lr=3e-4``) in a nested dict; values are parsed as YAML scalars."""
    if not overrides:
        return data
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    for key, raw in items:
        set_dotted(data, key, (yaml.safe_load(raw) if raw != "" else None) if isinstance(raw, str) else raw)
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``key="a.b"``, creating (or replacing null) parents."""
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section (it is {nxt!r})")
        node = nxt
    node[parts[-1]] = value


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not of the form key=value")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def load_config(cls: type[M], path: str | Path | None, overrides=None, base: dict | None = None) -> M:
    """``cls`` from a YAML file (or ``base``) with overrides; errors name the file and fields."""
    data = load_yaml(path) if path is not None else dict(base or {})
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        where = f"{path}" if path is not None else cls.__name__
        lines = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            lines.append(f"  {loc}: {e['msg']}")
        raise ConfigError(f"{where}: invalid config:\n" + "\n".join(lines)) from None
