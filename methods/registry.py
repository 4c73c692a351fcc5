"""Method registry: one name, one class. Registering a name twice is an error."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from methods.base import Method

_METHODS: dict[str, type[Method]] = {}

M = TypeVar("M", bound="type[Method]")


def register(name: str):
    """Class decorator that makes a method available under ``name``."""

    def decorate(cls: M) -> M:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice ({_METHODS[name].__module__} and {cls.__module__})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str) -> type[Method]:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def method_names() -> list[str]:
    return sorted(_METHODS)
