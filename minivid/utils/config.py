"""Config dataclasses that round-trip through JSON: every model config (``minivid.nn.ModelConfig``) and every run
config (the demo's) derives from :class:`Config`."""

from __future__ import annotations

import dataclasses
import types
import typing


@dataclasses.dataclass
class Config:
    """A dataclass whose fields are numbers, strings, bools, None, tuples of those, or nested configs. Subclasses
    validate their fields in ``__post_init__`` (a ValueError naming the field, its value and what is allowed)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> "Config":
        """Rebuild a config from :meth:`to_dict`'s output (e.g. read from JSON): lists become tuples, nested configs
        are rebuilt, and an unknown field is a clear error naming the allowed ones."""
        if not isinstance(fields, dict):
            raise ValueError(f"{cls.__name__}.from_dict takes a dict of fields, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in fields.items():
            nested = _config_type(hints.get(name))
            if nested is not None and isinstance(value, dict):
                kwargs[name] = nested.from_dict(value)
            else:
                kwargs[name] = _tuples(value)
        return cls(**kwargs)


def _config_type(hint):
    """The Config class of a field typed ``SomeConfig`` or ``SomeConfig | None`` (an optional nested config), else
    None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) \
        else (hint,)
    found = [t for t in options if isinstance(t, type) and issubclass(t, Config)]
    return found[0] if len(found) == 1 else None


def _tuples(value):
    """JSON lists back to the tuples the configs hold."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every key whose value differs between two config dicts (nested dicts key by key, with
    dotted names): what a refused resume reports."""
    lines = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            lines.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return lines
