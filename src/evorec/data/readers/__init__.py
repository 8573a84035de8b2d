"""Source readers, one module per source family, registered by format name.

``get_reader("taobao")`` returns the reader class; an unknown name lists the known ones.
"""

from __future__ import annotations

from evorec.data.readers.base import FormatMismatch, Reader, ReaderOptionError

REGISTRY: dict[str, type[Reader]] = {}


def register(cls: type[Reader]) -> type[Reader]:
    if cls.format in REGISTRY:
        raise ValueError(f"reader format {cls.format!r} registered twice")
    REGISTRY[cls.format] = cls
    return cls


def get_reader(fmt: str) -> type[Reader]:
    _load_builtin()
    try:
        return REGISTRY[fmt]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ReaderOptionError(f"unknown format {fmt!r}; known formats: {known}") from None


def known_formats() -> dict[str, str]:
    _load_builtin()
    return {name: cls.description for name, cls in sorted(REGISTRY.items())}


_LOADED = False


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    for mod in BUILTIN_MODULES:
        importlib.import_module(f"evorec.data.readers.{mod}")


# One module per source family; each registers its readers on import.
BUILTIN_MODULES = (
    "taobao", "generic", "amazon", "amazon_ratings", "retailrocket", "seqtext", "movielens", "sessions", "completejourney",
)

__all__ = ["REGISTRY", "FormatMismatch", "Reader", "ReaderOptionError", "get_reader", "known_formats", "register"]
