"""`ReadOnly`: a public read-only property over a private attribute, in one line (the
face's and the `Emulator`'s).

    class Emulator:
        store: ReadOnly[Store] = ReadOnly("The sessions and avatars behind the API.")

is the same as writing out

    @property
    def store(self) -> Store:
        \"\"\"The sessions and avatars behind the API.\"\"\"
        return self._store

It is a `property`: it reads `self._store`, it cannot be set or deleted (with the
same errors), and `help()` lists it with its docstring among the properties.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

__all__ = ["ReadOnly"]

T = TypeVar("T")


class ReadOnly(property, Generic[T]):
    """The attribute `name` of a class: a property that reads the instance's `_name`.

    Args:
        doc: The property's docstring.
    """

    def __init__(self, doc: str) -> None:
        super().__init__(doc=doc)
        # A property subclass keeps its docstring on the instance (see `property`).
        self.__doc__ = doc

    def __set_name__(self, owner: type[Any], name: str) -> None:
        # The attribute it reads is known only now: become `property(read, doc=doc)`.
        private = f"_{name}"

        def read(instance: object) -> Any:
            return getattr(instance, private)

        # Named as the method under `@property` would be.
        read.__name__ = name
        read.__qualname__ = f"{owner.__qualname__}.{name}"
        super().__init__(read, doc=self.__doc__)
        # Python 3.11 on: the name a property's errors give (typeshed does not know it).
        set_name = getattr(super(), "__set_name__", None)
        if set_name is not None:
            set_name(owner, name)

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> ReadOnly[T]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None, /) -> T: ...

    def __get__(self, instance: object | None, owner: type[Any] | None = None, /) -> Any:
        return super().__get__(instance, owner)
