"""One object per aggregation mode: what the coordinator does with each mode's replies.

* :mod:`.base`       :class:`~.base.AggregationStrategy` (what a mode is to the
  coordinator), :class:`~.base.Group`, :class:`~.base.Link` (what the coordinator
  does for a mode);
* :mod:`.plaintext`  the insecure baseline: raw updates (and the validation vote's
  ``plain/ballot`` stage);
* :mod:`.mask`       SecAgg+ pairwise masking;
* :mod:`.he`         CKKS encryption under the auditor's key.

:func:`build_mode` picks the one ``aggregation.mode`` names. The trust check is not a
mode: the modes call :class:`securepool.coordinator.trust.TrustRelay`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from protocols.aggregation import AggregationMode
from securepool.config import RunConfig
from securepool.coordinator.modes.base import AggregationStrategy, Group, Link

if TYPE_CHECKING:
    from securepool.coordinator.trust import TrustRelay


def build_mode(
    cfg: RunConfig,
    link: Link,
    *,
    trust: TrustRelay | None,
    model_sizes: Mapping[str, int],
) -> AggregationStrategy:
    """The strategy object of ``cfg.aggregation.mode`` over ``link`` (the coordinator)."""
    # imported here: the modes import the trust layer, which imports .base from here
    mode = cfg.aggregation.mode
    if mode is AggregationMode.MASK:
        from securepool.coordinator.modes.mask import MaskMode

        return MaskMode(cfg, link, trust=trust, model_sizes=model_sizes)
    if mode is AggregationMode.HE:
        from securepool.coordinator.modes.he import HEMode

        return HEMode(cfg, link, trust=trust)
    from securepool.coordinator.modes.plaintext import PlaintextMode

    return PlaintextMode(cfg, link, trust=trust, model_sizes=model_sizes)


__all__ = ["AggregationStrategy", "Group", "Link", "build_mode"]
