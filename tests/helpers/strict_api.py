"""A strict proxy that holds a recording stand-in to the real API surface of one release.

The stand-ins of ``tensorrt`` and ``cuda.bindings.runtime`` in the tests give behaviour (they record
calls and return plausible objects); this proxy gives the truth about names. Every attribute the code
under test reads, every property it sets and every call it makes goes through the proxy, which
checks it against the surface dumped from NVIDIA's real module of that version
(:mod:`tests.helpers.real_api_surface`):

* a module attribute, class member or enum member the real release lacks raises
  :class:`MissingInRealApi` (an ``AttributeError``, as the real module would: ``hasattr`` and
  ``getattr(..., default)`` keep working as version probes);
* a call whose positional count or keyword names no real overload accepts raises
  :class:`BadCallForRealApi` (a ``TypeError``, as pybind11 would);
* a property set that is read-only in the release raises :class:`MissingInRealApi`;
* a name the real release has but the stand-in lacks raises :class:`StandInIncomplete`, so the
  stand-in cannot silently answer ``False`` to a probe the real module would answer ``True``;
* every class the code reaches (by return annotation) is checked once: each public member the
  stand-in's class defines must exist on the real class with a compatible signature.

Every mismatch is also appended to :attr:`StrictApi.mismatches`, so a test can assert none happened
even where the code under test caught the exception.
"""

from __future__ import annotations

import inspect
import re
import types
from typing import Any

_BUILTIN_RESULTS = (bytes, bytearray, memoryview, str, int, float, bool, list, tuple, dict, set, type(None))
_POSITIONAL_ONLY_NAME = re.compile(r"^arg\d+$")


class RealApiMismatch(Exception):
    """Base of the proxy's refusals."""


class MissingInRealApi(RealApiMismatch, AttributeError):
    """A name the real release does not have (or a read-only property that was set)."""


class BadCallForRealApi(RealApiMismatch, TypeError):
    """A call no overload of the real release accepts."""


class StandInIncomplete(RealApiMismatch):
    """The real release has this name but the stand-in does not: complete the stand-in."""


def bind_failure(signatures: list[dict], args: tuple, kwargs: dict) -> str | None:
    """None when some overload accepts ``args`` / ``kwargs`` by count and keyword names, else why not."""
    if not signatures:
        return None  # no signature recorded (rare C builtins): nothing to hold the call to
    reasons = []
    for sig in signatures:
        reason = _bind_one(sig["params"], args, kwargs)
        if reason is None:
            return None
        reasons.append(reason)
    return "; ".join(dict.fromkeys(reasons))


def _bind_one(params: list[dict], args: tuple, kwargs: dict) -> str | None:
    positional = [p for p in params if p["kind"] in ("normal", "positional")]
    var_args = any(p["kind"] == "varargs" for p in params)
    var_kw = any(p["kind"] == "varkw" for p in params)
    if len(args) > len(positional) and not var_args:
        return f"takes {len(positional)} positional arguments, got {len(args)}"
    filled = {p["name"] for p in positional[: len(args)]}
    by_keyword = {
        p["name"]: p
        for p in params
        if p["kind"] in ("normal", "keyword") and not _POSITIONAL_ONLY_NAME.match(p["name"])
    }
    for name in kwargs:
        if name not in by_keyword:
            if var_kw:
                continue
            return f"has no argument named {name!r}"
        if name in filled:
            return f"got {name!r} twice"
        filled.add(name)
    missing = [
        p["name"]
        for p in params
        if p["kind"] in ("normal", "positional", "keyword") and not p["default"] and p["name"] not in filled
    ]
    return f"missing required argument(s) {', '.join(missing)}" if missing else None


def _names(signature: list[dict]) -> list[str]:
    return [p["name"] for p in signature if p["kind"] in ("normal", "positional", "keyword")]


def _fake_signature_fits(fake: Any, real_signatures: list[dict]) -> bool:
    """The stand-in's method (a function from a class body: ``self`` first) has the parameter names
    of some real overload (``argN`` matches any name)."""
    try:
        params = list(inspect.signature(fake).parameters.values())[1:]
    except (TypeError, ValueError):
        return True
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return True
    names = [p.name for p in params]
    for sig in real_signatures:
        real = _names(sig["params"])
        if any(p["kind"] in ("varargs", "varkw") for p in sig["params"]):
            return True
        if len(real) == len(names) and all(
            _POSITIONAL_ONLY_NAME.match(r) or r == n for r, n in zip(real, names)
        ):
            return True
    return not real_signatures


def _last_class(type_text: str, classes: dict) -> str | None:
    for name in reversed(re.findall(r"\w+", type_text or "")):
        if name in classes:
            return name
    return None


class StrictApi:
    """The proxy's shared state: the surface, its label and the mismatches seen."""

    def __init__(self, surface: dict, label: str):
        self.surface = surface
        self.label = label
        self.classes = {n: e for n, e in surface["module"].items() if e.get("kind") == "class"}
        self.mismatches: list[str] = []
        self.checked_classes: set[tuple[type, str]] = set()

    def fail(self, exc_type: type[RealApiMismatch], message: str) -> RealApiMismatch:
        text = f"{self.label}: {message}"
        self.mismatches.append(text)
        return exc_type(text)

    def member(
        self, surface: dict[str, Any], stand_in: Any, name: str, missing: str, incomplete: str
    ) -> tuple[dict[str, Any], Any]:
        """``name``'s entry in the real ``surface`` and the stand-in's value of it; a name the real
        release lacks raises :class:`MissingInRealApi` (``missing``), one only the stand-in lacks
        :class:`StandInIncomplete` (``incomplete``)."""
        entry = surface.get(name)
        if entry is None:
            raise self.fail(MissingInRealApi, missing)
        if not hasattr(stand_in, name):
            raise self.fail(StandInIncomplete, incomplete)
        return entry, getattr(stand_in, name)

    def module(self, fake: Any) -> StrictModule:
        return StrictModule(self, fake)

    def wrap_result(self, value: Any, returns: str) -> Any:
        if isinstance(value, (*_BUILTIN_RESULTS, StrictObject)):
            return value
        cls = _last_class(returns, self.classes)
        if cls is None:
            return value
        return StrictObject(self, value, cls)

    def check_stand_in_class(self, fake_cls: type, real: str) -> None:
        """Every public member the stand-in's class defines exists on the real class and fits."""
        if (fake_cls, real) in self.checked_classes or fake_cls.__module__ == "builtins":
            return
        self.checked_classes.add((fake_cls, real))
        members = self.classes[real]["members"]
        enum = self.classes[real].get("enum") or []
        for name, value in vars(fake_cls).items():
            if name.startswith("_"):
                continue
            if name not in members and name not in enum:
                self.mismatches.append(
                    f"{self.label}: the stand-in's {real} offers {name!r}, which the real {real} lacks"
                )
                continue
            member = members.get(name, {})
            is_method = member.get("kind") in ("method", "static") and callable(value)
            if is_method and not _fake_signature_fits(value, member.get("signatures", [])):
                self.mismatches.append(
                    f"{self.label}: the stand-in's {real}.{name}{inspect.signature(value)} does not "
                    f"match the real signatures {[_names(s['params']) for s in member['signatures']]}"
                )


def _unwrap(value: Any) -> Any:
    if isinstance(value, StrictObject):
        return object.__getattribute__(value, "_target")
    if isinstance(value, StrictClass):
        return object.__getattribute__(value, "_fake")
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    return value


class StrictCallable:
    """A function or bound method held to the real overloads."""

    def __init__(self, api: StrictApi, fn: Any, signatures: list[dict], where: str):
        self._api, self._fn, self._signatures, self._where = api, fn, signatures, where

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reason = bind_failure(self._signatures, args, kwargs)
        if reason is not None:
            raise self._api.fail(BadCallForRealApi, f"{self._where}() {reason}")
        result = self._fn(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
        returns = next(
            (s["returns"] for s in self._signatures if _bind_one(s["params"], args, kwargs) is None), ""
        )
        return self._api.wrap_result(result, returns)


class StrictModule(types.ModuleType):
    """The module: attributes exist in the real release, classes and functions are held to it."""

    def __init__(self, api: StrictApi, fake: Any):
        super().__init__(getattr(fake, "__name__", "strict"))
        object.__setattr__(self, "_api", api)
        object.__setattr__(self, "_fake", fake)
        if hasattr(fake, "__version__"):
            object.__setattr__(self, "__version__", fake.__version__)

    def __getattr__(self, name: str) -> Any:
        api: StrictApi = object.__getattribute__(self, "_api")
        fake = object.__getattribute__(self, "_fake")
        if name.startswith("__"):
            return getattr(fake, name)
        entry, value = api.member(
            api.surface["module"],
            fake,
            name,
            f"module has no attribute {name!r}",
            f"the stand-in lacks {name!r}, which the real module has",
        )
        kind = entry.get("kind")
        if kind == "class":
            return StrictClass(api, value, name)
        if kind == "function":
            return StrictCallable(api, value, entry.get("signatures", []), name)
        return value


class StrictClass:
    """A class of the module: construction, class attributes, enum members and subclassing."""

    def __init__(self, api: StrictApi, fake: Any, name: str):
        self._api, self._fake, self._name = api, fake, name

    def __getattribute__(self, name: str) -> Any:
        # ``trt.ILogger.__init__(self)`` in a subclass's constructor means the real class's
        # constructor, not this proxy's.
        if name == "__init__":
            return object.__getattribute__(self, "_fake").__init__
        return object.__getattribute__(self, name)

    @property
    def _entry(self) -> dict:
        return self._api.classes[self._name]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        init = self._entry["members"].get("__init__", {})
        reason = bind_failure(init.get("signatures", []), args, kwargs)
        if reason is not None:
            raise self._api.fail(BadCallForRealApi, f"{self._name}() {reason}")
        instance = self._fake(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
        return self._api.wrap_result(instance, self._name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            return getattr(self._fake, name)
        entry = self._entry
        member = entry["members"].get(name)
        if member is None and name not in (entry.get("enum") or []):
            raise self._api.fail(MissingInRealApi, f"{self._name} has no attribute {name!r}")
        if not hasattr(self._fake, name):
            raise self._api.fail(
                StandInIncomplete, f"the stand-in's {self._name} lacks {name!r}, which the real one has"
            )
        value = getattr(self._fake, name)
        real_value = (entry.get("enum") or {}).get(name)
        if isinstance(value, int) and real_value is not None and int(value) != real_value:
            self._api.mismatches.append(
                f"{self._api.label}: the stand-in's {self._name}.{name} is {int(value)}, the real value is "
                f"{real_value}"
            )
        return value

    def __mro_entries__(self, bases: tuple) -> tuple[type, ...]:
        """``class MyLogger(trt.ILogger)``: the subclass may only override the real class's methods."""
        api, real, fake = self._api, self._name, self._fake

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            members = api.classes[real]["members"]
            for name, value in vars(cls).items():
                if name.startswith("_") or not callable(value):
                    continue
                if name not in members:
                    api.mismatches.append(
                        f"{api.label}: a subclass of {real} overrides {name!r}, which {real} lacks"
                    )
                elif not _fake_signature_fits(value, members[name].get("signatures", [])):
                    api.mismatches.append(
                        f"{api.label}: {cls.__name__}.{name} does not match the real {real}.{name}"
                    )

        base = type(f"Strict{real}", (fake,), {"__init_subclass__": classmethod(__init_subclass__)})
        return (base,)


class StrictObject:
    """An instance of a real class, as the code under test sees it."""

    def __init__(self, api: StrictApi, target: Any, cls: str):
        object.__setattr__(self, "_api", api)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_cls", cls)
        api.check_stand_in_class(type(target), cls)

    def __getattr__(self, name: str) -> Any:
        api: StrictApi = object.__getattribute__(self, "_api")
        target = object.__getattribute__(self, "_target")
        cls = object.__getattribute__(self, "_cls")
        member, value = api.member(
            api.classes[cls]["members"],
            target,
            name,
            f"{cls} has no attribute {name!r}",
            f"the stand-in's {cls} lacks {name!r}, which the real one has",
        )
        kind = member.get("kind")
        if kind in ("method", "static"):
            return StrictCallable(api, value, member.get("signatures", []), f"{cls}.{name}")
        if kind == "property":
            return api.wrap_result(value, member.get("returns", ""))
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        api: StrictApi = object.__getattribute__(self, "_api")
        cls = object.__getattribute__(self, "_cls")
        member = api.classes[cls]["members"].get(name)
        if member is None or member.get("kind") != "property":
            raise api.fail(MissingInRealApi, f"{cls} has no property {name!r} to set")
        if not member.get("writable"):
            raise api.fail(MissingInRealApi, f"{cls}.{name} is read-only")
        setattr(object.__getattribute__(self, "_target"), name, _unwrap(value))

    def __bytes__(self) -> bytes:
        return bytes(object.__getattribute__(self, "_target"))

    def __eq__(self, other: object) -> bool:
        return object.__getattribute__(self, "_target") == _unwrap(other)

    def __hash__(self) -> int:
        return hash(object.__getattribute__(self, "_target"))
