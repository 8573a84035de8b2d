"""Model registry: ``@register_model("sasrec", SASRecConfig)`` maps a name to a model class and its
typed config. Third-party models register through the ``evorec.models`` entry-point group."""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from evorec.errors import InputError, NotFoundError

log = logging.getLogger(__name__)

_MODELS: dict[str, tuple[type, type[BaseModel]]] = {}
_LOADED = False

# Built-in model modules (one model per file); each registers itself on import.
BUILTIN = (
    "pop", "itemknn", "markov",
    "gru4rec", "caser", "sasrec", "bert4rec", "hstu", "dien", "multvae", "ensemble",
    "ptopfreq", "tifuknn", "repeat", "trex",
)


class UnknownModelError(NotFoundError):
    """No model of that name is registered (NotFoundError reads as a sentence, unlike KeyError)."""


def register_model(name: str, config: type[BaseModel]):
    def deco(cls: type) -> type:
        if name in _MODELS and _MODELS[name][0] is not cls:
            raise ValueError(f"model name {name!r} registered twice ({_MODELS[name][0].__name__}, {cls.__name__})")
        cls.name = name
        cls.config_class = config
        _MODELS[name] = (cls, config)
        return cls

    return deco


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in BUILTIN:
        try:
            importlib.import_module(f"evorec.models.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"evorec.models.{mod}":
                raise
    for ep in entry_points(group="evorec.models"):
        try:
            ep.load()
        except Exception:  # a broken plugin must not break the built-ins
            log.exception("could not load model plugin %s", ep.name)


def known_models() -> list[str]:
    _load()
    return sorted(_MODELS)


def get_model(name: str) -> tuple[type, type[BaseModel]]:
    _load()
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(known_models())}")
    return _MODELS[name]


def make_config(name: str, values: dict[str, Any] | None = None) -> BaseModel:
    """The model's typed config from plain values; a typo fails with the field's name."""
    _, cfg_cls = get_model(name)
    try:
        return cfg_cls(**(values or {}))
    except ValidationError as exc:
        raise InputError(f"bad config for model {name!r}: {exc}") from None


def build_model(name: str, config: BaseModel | dict[str, Any] | None, sizes):
    """Construct (not train) a model from its config plus sizes taken from the data."""
    cls, cfg_cls = get_model(name)
    if not isinstance(config, cfg_cls):
        config = make_config(name, config if isinstance(config, dict) else (config.model_dump() if config else None))
    return cls(config, sizes)
