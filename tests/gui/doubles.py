"""Checks for test doubles: a stand-in must offer everything of the protocol it stands in for."""

from __future__ import annotations

import inspect
from typing import Any


def protocol_methods(protocol: type) -> list[str]:
    """The methods a ``typing.Protocol`` declares (its own, not object's or Protocol's)."""
    return [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]


def assert_implements(double: Any, protocol: type) -> None:
    """Every method of ``protocol`` exists on ``double`` and accepts the protocol's arguments."""
    names = protocol_methods(protocol)
    assert names, f"{protocol.__name__} declares no methods"
    for name in names:
        method = getattr(type(double), name, None)
        assert callable(method), f"{type(double).__name__} lacks {protocol.__name__}.{name}"
        wanted = [p for p in inspect.signature(getattr(protocol, name)).parameters.values() if p.name != "self"]
        placeholders = [object()] * len(wanted)
        try:
            inspect.signature(getattr(double, name)).bind(*placeholders)
        except TypeError as exc:
            raise AssertionError(f"{type(double).__name__}.{name} does not take {protocol.__name__}'s arguments "
                                 f"({', '.join(p.name for p in wanted)}): {exc}") from None
