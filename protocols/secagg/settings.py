"""Settings of a masked aggregation session (the ``[aggregation.mask]`` config table)."""

from __future__ import annotations

from dataclasses import dataclass

from crypto.fixedpoint import FixedPointSpec, check_headroom, spec_for


@dataclass(frozen=True)
class MaskSettings:
    """Public parameters every participant of a session agrees on.

    ``clip`` bounds each element of an update, ``max_weight`` each sample-count weight
    (larger weights are capped). ``expected_dropout`` and ``corrupt_fraction`` drive
    the choice of graph degree and threshold (see :mod:`protocols.secagg.graph`).
    ``scale`` fixes the fixed-point precision (0: the finest that fits the group).
    """

    bits: int = 32
    clip: float = 1.0
    max_weight: float = 1024.0
    scale: float = 0.0
    expected_dropout: float = 0.1
    corrupt_fraction: float = 0.2
    correctness_bits: int = 20
    security_bits: int = 40
    degree: int = 0  # 0: chosen from the group size and the rates above

    def problems(self) -> list[str]:
        out = []
        if self.bits not in (32, 64):
            out.append(f"bits must be 32 or 64, got {self.bits}")
        if self.clip <= 0 or self.max_weight <= 0 or self.scale < 0:
            out.append("clip and max_weight must be > 0 and scale >= 0")
        if not 0 <= self.expected_dropout < 0.5:
            out.append(f"expected_dropout must be in [0, 0.5), got {self.expected_dropout}")
        if not 0 <= self.corrupt_fraction < 0.5:
            out.append(f"corrupt_fraction must be in [0, 0.5), got {self.corrupt_fraction}")
        if self.degree < 0:
            out.append(f"degree must be >= 0, got {self.degree}")
        return out


def encoding_spec(settings: MaskSettings, *, group_size: int) -> FixedPointSpec:
    """The fixed-point encoding of a session of ``group_size`` members under ``settings``.

    ``clip`` is ``max_weight * max(clip, 1)`` (what :func:`protocols.secagg.client.
    encode_input` can produce), ``bits`` the settings' word size, and the scale the
    settings' ``scale`` when it is set (checked for headroom over the group), else the
    finest power of two that fits the group (:func:`crypto.fixedpoint.spec_for`).

    Security: the encoding is a pure function of the agreed settings and the group size,
    like (k, t, T) (:func:`protocols.secagg.graph.session_parameters`): every client
    derives it from its own view and refuses a key directory that names another scale,
    so a coordinator cannot choose a scale so small that encoded inputs carry nothing
    (1e-300) or so large that the group's sum wraps. The result always passes
    :func:`crypto.fixedpoint.check_headroom` for ``group_size`` summands; settings for
    which no scale fits raise EncodingError (CryptoTypeError for a non-number).
    """
    clip = settings.max_weight * max(settings.clip, 1.0)
    if settings.scale:
        spec = FixedPointSpec(bits=settings.bits, scale=settings.scale, clip=clip)
        check_headroom(spec, n_summands=group_size)
        return spec
    return spec_for(bits=settings.bits, clip=clip, n_summands=group_size)
