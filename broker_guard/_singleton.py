"""One shared instance per process for the seed's ``get_...()`` factories, which refuse to ignore
arguments."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from broker_guard.errors import ConfigError

T = TypeVar("T")


class SingletonFactory(Generic[T]):
    def __init__(self, name: str, build: Callable[..., T]) -> None:
        self._name = name
        self._build = build
        self._lock = threading.Lock()
        self._instance: T | None = None
        self._args: dict[str, Any] = {}

    def get(self, **kwargs: Any) -> T:
        given = {k: v for k, v in kwargs.items() if v is not None}
        with self._lock:
            if self._instance is None:
                self._instance = self._build(**given)
                self._args = given
                return self._instance
            differing = {k: v for k, v in given.items() if self._args.get(k) != v}
            if differing:
                key, value = next(iter(differing.items()))
                raise ConfigError(
                    f"{self._name}({key}=...)",
                    value,
                    f"the shared instance was created with {self._args or 'defaults'}; "
                    f"call reset first or build your own instance of the class",
                )
            return self._instance

    def reset(self) -> None:
        with self._lock:
            self._instance = None
            self._args = {}
