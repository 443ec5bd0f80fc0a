"""Secret key objects hide in repr and refuse pickling and copying (attack: leak by log
line, checkpoint or deep copy)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest

from crypto.agreement import AgreementKey
from crypto.errors import KeyMaterialError, SecretPicklingError, SecurePoolError
from crypto.secret import SecretHolder
from crypto.signing import IdentityKey

SEED = bytes(range(32))
FACTORIES: list[Callable[[], SecretHolder]] = [
    lambda: AgreementKey.from_private_bytes(SEED),
    lambda: IdentityKey.from_private_bytes(SEED),
]


@pytest.mark.parametrize("factory", FACTORIES)
def test_repr_str_and_format_leak_nothing(factory: Callable[[], SecretHolder]) -> None:
    key = factory()
    shown = [repr(key), str(key), f"{key}", f"{key!r}", f"{key:>60}", repr([key])]
    for text in shown:
        assert "hidden" in text
        assert SEED.hex() not in text and SEED.hex().upper() not in text
        assert repr(SEED) not in text
    assert not hasattr(key, "__dict__")  # material only in __slots__, nothing for vars()


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_refused(factory: Callable[[], SecretHolder], protocol: int) -> None:
    key = factory()
    with pytest.raises(TypeError) as info:
        pickle.dumps(key, protocol=protocol)
    assert isinstance(info.value, SecretPicklingError)
    assert isinstance(info.value, KeyMaterialError) and isinstance(info.value, SecurePoolError)
    with pytest.raises(SecretPicklingError):
        pickle.dumps({"inside": [key]}, protocol=protocol)  # nested does not slip through


@pytest.mark.parametrize("factory", FACTORIES)
def test_copying_is_refused(factory: Callable[[], SecretHolder]) -> None:
    key = factory()
    with pytest.raises(SecretPicklingError):
        copy.copy(key)
    with pytest.raises(SecretPicklingError):
        copy.deepcopy({"k": key})
