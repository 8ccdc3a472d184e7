"""Signal-type registry: what a hash *is* (name, encoding, distance, threshold).

The core never hard-codes "md5" or "pdq" behaviour; it asks the registry. A new hash (a
licensed PhotoDNA build, a video hash, a research hash) is added by registering a
:class:`SignalType`, either in code with :func:`register_signal_type` or from an installed
package through the entry-point group ``hashwatch.signals``. An entry point may name a
SignalType instance, a SignalType subclass (called with no arguments), or a callable returning
one SignalType or an iterable of them.
"""

from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

__all__ = [
    "ENTRY_POINT_GROUP",
    "HexSignalType",
    "InvalidSignalValue",
    "SignalNotMatchable",
    "SignalType",
    "UnknownSignalType",
    "get_signal_type",
    "load_plugins",
    "plugin_errors",
    "register_signal_type",
    "signal_types",
    "unregister_signal_type",
]

ENTRY_POINT_GROUP = "hashwatch.signals"

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class InvalidSignalValue(ValueError):
    """A hash value that is not well-formed for its signal type."""


class SignalNotMatchable(RuntimeError):
    """A signal type whose values are stored but cannot be compared here (e.g. PhotoDNA
    without the licensed plug-in)."""


class UnknownSignalType(KeyError):
    """No signal type of that name is registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown signal type"


class SignalType(ABC):
    """One kind of hash.

    Subclasses set ``name`` (lower-case, unique), ``threshold`` (a match is
    ``distance(a, b) <= threshold``), ``exact`` (True for cryptographic digests), and
    ``min_quality`` (hashes with a lower quality are not used for matching; None = no quality).
    ``matchable`` is False for a type whose values are kept and exported but cannot be
    compared (``distance`` raises :class:`SignalNotMatchable`); ``placeholder`` marks a
    built-in that a plug-in of the same name may replace (PhotoDNA).
    """

    name: str
    threshold: int
    exact: bool = False
    min_quality: int | None = None
    description: str = ""
    matchable: bool = True
    placeholder: bool = False

    @abstractmethod
    def validate(self, value: str) -> str:
        """Return the canonical text form of ``value`` or raise :class:`InvalidSignalValue`."""

    @abstractmethod
    def distance(self, a: str, b: str) -> int:
        """Distance between two canonical values (0 = identical)."""

    def matches(self, a: str, b: str, *, threshold: int | None = None) -> bool:
        limit = self.threshold if threshold is None else threshold
        return self.distance(a, b) <= limit

    def usable(self, quality: int | None) -> bool:
        """Whether a hash of this quality may be matched (PDQ: quality >= 50)."""
        return self.min_quality is None or quality is None or quality >= self.min_quality

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} threshold={self.threshold}>"


class HexSignalType(SignalType):
    """A fixed-length hash written as lower-case hex (md5, sha1, sha256, pdq, ...).

    ``metric`` is "hamming" (bit distance) or "exact" (0 when equal, 1 otherwise).
    """

    def __init__(
        self,
        name: str,
        *,
        n_bytes: int,
        threshold: int,
        metric: str = "hamming",
        min_quality: int | None = None,
        description: str = "",
    ) -> None:
        if metric not in ("hamming", "exact"):
            raise ValueError("metric must be 'hamming' or 'exact'")
        if n_bytes < 1:
            raise ValueError("n_bytes must be positive")
        self.name = name
        self.n_bytes = n_bytes
        self.n_hex = 2 * n_bytes
        self.threshold = threshold
        self.metric = metric
        self.exact = metric == "exact"
        self.min_quality = min_quality
        self.description = description
        self._re = re.compile(rf"[0-9a-f]{{{self.n_hex}}}")

    def validate(self, value: str) -> str:
        if not isinstance(value, str):
            raise InvalidSignalValue(
                f"{self.name} value must be a string, got {type(value).__name__}"
            )
        v = value.strip().lower()
        if len(v) != self.n_hex:
            raise InvalidSignalValue(
                f"{self.name} value must be {self.n_hex} hex characters, got {len(v)}"
            )
        if not self._re.fullmatch(v):
            bad = next(c for c in v if c not in "0123456789abcdef")
            raise InvalidSignalValue(f"{self.name} value has a non-hex character {bad!r}")
        return v

    def distance(self, a: str, b: str) -> int:
        if self.exact:
            return 0 if a.lower() == b.lower() else 1
        return (int(a, 16) ^ int(b, 16)).bit_count()


# ---------------------------------------------------------------------------------------------
# registry

_lock = threading.RLock()
_registry: dict[str, SignalType] = {}
_plugins_loaded = False
_plugin_errors: dict[str, str] = {}


def register_signal_type(st: SignalType, *, replace: bool = False) -> SignalType:
    """Add a signal type. Re-registering a name raises ValueError unless ``replace=True``."""
    if not isinstance(st, SignalType):
        raise TypeError(f"expected a SignalType, got {type(st).__name__}")
    name = getattr(st, "name", None)
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid signal type name {name!r} (lower-case, [a-z0-9_.-], <= 64)")
    if not isinstance(getattr(st, "threshold", None), int):
        raise ValueError(f"signal type {name!r} needs an integer threshold")
    with _lock:
        existing = _registry.get(name)
        if existing is not None and existing is not st and not replace:
            raise ValueError(f"signal type {name!r} is already registered")
        _registry[name] = st
    return st


def unregister_signal_type(name: str) -> None:
    """Remove a signal type (mainly for tests and plug-in reloads)."""
    with _lock:
        _registry.pop(name, None)


def get_signal_type(name: str) -> SignalType:
    """Look up a signal type by name (case-insensitive), loading plug-ins on first miss."""
    key = name.strip().lower()
    with _lock:
        st = _registry.get(key)
        if st is None and not _plugins_loaded:
            load_plugins()
            st = _registry.get(key)
    if st is None:
        known = ", ".join(sorted(_registry))
        raise UnknownSignalType(f"unknown signal type {name!r} (known: {known})")
    return st


def signal_types() -> dict[str, SignalType]:
    """All registered signal types (plug-ins included), by name."""
    with _lock:
        if not _plugins_loaded:
            load_plugins()
        return dict(sorted(_registry.items()))


def _coerce(obj: Any) -> list[SignalType]:
    if isinstance(obj, SignalType):
        return [obj]
    if isinstance(obj, type) and issubclass(obj, SignalType):
        return [obj()]
    if callable(obj):
        return _coerce_many(obj())
    raise TypeError(f"entry point gave {type(obj).__name__}, not a SignalType")


def _coerce_many(obj: Any) -> list[SignalType]:
    if isinstance(obj, SignalType):
        return [obj]
    if isinstance(obj, Iterable):
        out = list(obj)
        if all(isinstance(x, SignalType) for x in out):
            return out
    raise TypeError(f"plug-in factory returned {type(obj).__name__}, not SignalType(s)")


def load_plugins(*, force: bool = False, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register signal types from installed entry points; returns the names added.

    A broken plug-in never breaks the core: its error is logged (warning) and kept in
    :func:`plugin_errors`.
    """
    global _plugins_loaded
    added: list[str] = []
    with _lock:
        if _plugins_loaded and not force:
            return added
        _plugins_loaded = True
        for ep in entry_points(group=group):
            try:
                loaded: Callable[..., Any] | SignalType = ep.load()
                for st in _coerce(loaded):
                    # A plug-in must not silently change what "pdq" means; it may only fill
                    # a placeholder (the stored-only PhotoDNA type).
                    existing = _registry.get(st.name)
                    if existing is not None and existing is not st and not existing.placeholder:
                        raise ValueError(f"signal type {st.name!r} is already registered")
                    register_signal_type(st, replace=existing is not None)
                    added.append(st.name)
                _plugin_errors.pop(ep.name, None)
            except Exception as exc:  # plug-in code is untrusted for stability
                _plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("signal plug-in %r (%s) failed to load: %s", ep.name, ep.value, exc)
    return added


def plugin_errors() -> dict[str, str]:
    """Entry-point name -> error message, for plug-ins that failed to load."""
    with _lock:
        return dict(_plugin_errors)
