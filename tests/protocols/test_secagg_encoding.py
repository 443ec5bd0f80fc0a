"""The fixed-point encoding is the clients' own (issue 21, item 7): every client derives
it from the agreed settings and its own group (``encoding_spec``, as it derives (k, t,
T)); a key directory that names another scale is refused before anything is shared.

Every attack is a lying coordinator: the honest server's directory with one field
replaced, sent to real :class:`SecAggClient` objects."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from secagg_session import SETTINGS, Session, reference

from crypto.errors import EncodingError, MessageError, SecurityViolation
from crypto.fixedpoint import FixedPointSpec
from protocols.secagg.client import ClientStage
from protocols.secagg.settings import MaskSettings, encoding_spec

#: the scale spec_for picks for a group of 6 under SETTINGS (max_weight 128, clip 1)
HONEST = encoding_spec(SETTINGS, group_size=6).scale


def test_the_encoding_is_derived_from_the_settings_and_the_group_size() -> None:
    spec = encoding_spec(SETTINGS, group_size=6)
    assert spec == FixedPointSpec(bits=32, scale=2.0**21, clip=128.0)
    # a larger group gets a coarser scale, never one that can wrap
    assert encoding_spec(SETTINGS, group_size=100).scale < spec.scale
    fixed = MaskSettings(max_weight=128.0, scale=2.0**10)
    assert encoding_spec(fixed, group_size=6).scale == 2.0**10
    with pytest.raises(EncodingError, match="headroom"):  # a set scale that cannot fit
        encoding_spec(MaskSettings(max_weight=128.0, scale=2.0**30), group_size=6)


def test_the_honest_session_uses_the_derived_encoding_and_sums_exactly() -> None:
    s = Session()
    s.advertise()
    total, weight, survivors = s.finish()
    assert s.server.spec == encoding_spec(SETTINGS, group_size=6)
    assert all(c._spec == s.server.spec for c in s.clients.values())
    want, want_weight = reference(s.inputs, survivors)
    assert weight == want_weight
    np.testing.assert_allclose(total, want, atol=6 / HONEST)


@pytest.mark.parametrize(
    "scale",
    [
        1e-300,  # encoded inputs carry nothing: every value rounds to 0 or +-1
        5e-324,  # the smallest positive double
        HONEST / 2,  # coarser than agreed, headroom fine
        math.nextafter(HONEST, 0.0),  # one ulp off
        HONEST * 2,  # finer than the group's headroom allows
        0.0,
        -HONEST,
    ],
    ids=["1e-300", "min-subnormal", "half", "one-ulp", "double", "zero", "negative"],
)
def test_a_directory_with_another_scale_is_refused_by_every_client(scale: float) -> None:
    s = Session()
    s.advertise()
    evil = s.crafted_directory(scale=scale)
    for p, client in s.clients.items():
        with pytest.raises(SecurityViolation, match="'scale'") as info:
            client.handle(evil)
        assert p in str(info.value)
        assert client.stage is ClientStage.SHARE  # refused before any share was made
    # the refusal changed nothing: the honest directory still completes exactly
    total, weight, survivors = s.finish()
    want, want_weight = reference(s.inputs, survivors)
    assert survivors == frozenset(s.inputs) and weight == want_weight
    np.testing.assert_allclose(total, want, atol=6 / HONEST)


def test_a_directory_with_another_scale_is_refused_under_a_configured_scale() -> None:
    """With ``scale`` set in the settings the clients hold the coordinator to it: the
    finest scale that fits (what spec_for would pick) is refused as well."""
    settings = MaskSettings(max_weight=128.0, scale=2.0**10)
    s = Session(settings=settings)
    s.advertise()
    finer = encoding_spec(SETTINGS, group_size=6).scale
    with pytest.raises(SecurityViolation, match="'scale'"):
        s.clients["p00"].handle(s.crafted_directory(scale=finer))
    total, weight, survivors = s.finish()
    want, want_weight = reference(s.inputs, survivors)
    assert weight == want_weight
    np.testing.assert_allclose(total, want, atol=6 / 2.0**10)


@pytest.mark.parametrize("word", [math.nan, math.inf, -math.inf])
def test_a_non_finite_scale_on_the_wire_is_a_message_error(word: float) -> None:
    s = Session()
    s.advertise()
    honest = struct.pack(">d", HONEST)
    at = s.directory.rfind(honest)
    assert at == len(s.directory) - 12  # the scale, then the u32 length, ends the message
    evil = s.directory[:at] + struct.pack(">d", word) + s.directory[at + 8 :]
    with pytest.raises(MessageError, match="not finite"):
        s.clients["p00"].handle(evil)
    assert s.clients["p00"].stage is ClientStage.SHARE


@pytest.mark.parametrize("field", ["length", "graph_seed"])
def test_the_other_derived_fields_of_the_directory_are_refused_too(field: str) -> None:
    s = Session()
    s.advertise()
    change: dict[str, object] = {"length": 5, "graph_seed": b"\x07" * 32}
    evil = s.crafted_directory(**{field: change[field]})
    with pytest.raises((MessageError, SecurityViolation)):
        s.clients["p00"].handle(evil)
    assert s.clients["p00"].stage is ClientStage.SHARE
