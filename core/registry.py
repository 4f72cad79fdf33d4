"""A name -> factory map with a clear error for an unknown name (one per kind of component)."""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from fedleak.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str | Callable[..., T], factory: Callable[..., T] | None = None) -> Any:
        """A component class under its own `name` attribute (the name is written once, in the class):
        ``REG.register(MyAttack)``, or as a bare decorator ``@REG.register``. A plain factory (a model,
        a dataset loader) is named here: ``REG.register("name", factory)`` or ``@REG.register("name")``."""
        if not isinstance(name, str):
            component: Callable[..., T] = name
            declared = getattr(component, "name", None)
            if not isinstance(declared, str) or not declared:
                raise ValueError(f"{self.kind} {component!r}: a component registers under its class attribute `name`; "
                                 "give it one, or pass the name")
            key, factory = declared, component
        else:
            key = name

        def add(f: Callable[..., T]) -> Callable[..., T]:
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' registered twice")
            self._items[key] = f
            return f
        return add(factory) if factory is not None else add

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
