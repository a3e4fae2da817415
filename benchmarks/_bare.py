"""Bare twins: SDK objects that run the SDK's own code while ``instrument()`` is on, so bare and
metered calls can alternate call by call in one process without switching the meter on and off.

``Twins(objects)`` records, before ``instrument()``, every attribute of every class in those
objects' MROs. After it, ``twin(obj)`` gives ``obj`` a subclass of its class holding, for each name
``instrument()`` replaced, what the name resolved to before (the first class in the MRO that
defined it then): the object's attribute lookups find the SDK's own functions again, everything
else (its state, its class's other code, ``isinstance``) is as it was. A name ``instrument()``
added where there was none is an error here (a twin could not hide it).
"""

from __future__ import annotations

from typing import Any


class Twins:
    def __init__(self, objects: list[Any]) -> None:
        self.made: dict[type, type] = {}  # a class -> its twin class (one per class: twins share it)
        self.before: dict[type, dict[str, Any]] = {}
        for obj in objects:
            for cls in type(obj).__mro__[:-1]:  # not object
                self.before.setdefault(cls, dict(vars(cls)))

    def twin(self, obj: Any) -> Any:
        """``obj``, its class swapped for one that undoes ``instrument()`` (in place; returned).
        Objects of one class get one twin class (the SDK's code then meets one type, not one per
        object, at its attribute caches)."""
        made = self.made.get(type(obj))
        if made is not None:
            obj.__class__ = made
            return obj
        overrides: dict[str, Any] = {}
        seen: set[str] = set()
        for cls in type(obj).__mro__[:-1]:
            before = self.before[cls]
            added = set(vars(cls)) - set(before)
            if added:
                raise RuntimeError(f"instrument() added {sorted(added)} to {cls.__qualname__}")
            for name, value in before.items():
                if name in seen:
                    continue
                seen.add(name)
                if cls.__dict__.get(name) is not value:
                    overrides[name] = value
        if not overrides:
            raise RuntimeError(f"instrument() replaced nothing {type(obj).__qualname__} resolves")
        made = self.made[type(obj)] = type("Bare" + type(obj).__name__, (type(obj),), overrides)
        obj.__class__ = made
        return obj
