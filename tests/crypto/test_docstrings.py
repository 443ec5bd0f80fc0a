"""House rule: every public function and method of the masking primitives says, in a
"Security:" paragraph, what it assumes and guarantees."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "crypto.kdf",
    "crypto.agreement",
    "crypto.signing",
    "crypto.mac",
    "crypto.aead",
    "crypto.prg",
    "crypto.shamir",
    "crypto.fixedpoint",
    "crypto.secret",
    "crypto.encoding",
    "protocols.secagg.binding",
]


def _public_callables(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    found: list[tuple[str, object]] = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            found.append((name, obj))
            for attr, member in vars(obj).items():
                member = getattr(member, "__func__", member)  # classmethods
                if not attr.startswith("_") and inspect.isfunction(member):
                    found.append((f"{name}.{attr}", member))
    return found


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_callable_has_a_security_paragraph(module_name: str) -> None:
    callables = _public_callables(module_name)
    assert callables, f"nothing public found in {module_name}"
    missing = [name for name, obj in callables if "Security:" not in (obj.__doc__ or "")]
    assert missing == []
