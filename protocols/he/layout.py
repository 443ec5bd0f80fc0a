"""Where each value sits in the CKKS slots of an HE upload.

The payload is ``[(w/u) * update (d values), w/u]``, split into chunks of
``slots - tag_slots`` data slots (the last chunk zero-padded), and every chunk ends with
``tag_slots`` contribution tags::

    chunk k: | data slots (payload[k*D : (k+1)*D], zero-padded) | tag slots |

All participants of a group use the same layout (same ``d``), so slot-wise sums line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from crypto.errors import EncodingError


@dataclass(frozen=True)
class SlotLayout:
    d: int
    slots: int
    tag_slots: int

    def __post_init__(self) -> None:
        if self.d < 1:
            raise EncodingError(f"update length must be >= 1, got {self.d}")
        if not 1 <= self.tag_slots < self.slots:
            raise EncodingError(f"tag_slots must be in 1..{self.slots - 1}")

    @property
    def data_slots(self) -> int:
        return self.slots - self.tag_slots

    @property
    def n_chunks(self) -> int:
        return -(-(self.d + 1) // self.data_slots)

    @property
    def padding(self) -> int:
        """Data slots past the payload (they must decrypt to 0 in an honest aggregate)."""
        return self.n_chunks * self.data_slots - (self.d + 1)

    def pack(
        self, weighted: NDArray[np.float64], weight: float, tags: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Rows to encrypt, shape ``(n_chunks, slots)``."""
        if weighted.shape != (self.d,):
            raise EncodingError(f"weighted update has shape {weighted.shape}, expected ({self.d},)")
        if tags.shape != (self.n_chunks, self.tag_slots):
            raise EncodingError(f"tags have shape {tags.shape}")
        data = np.zeros(self.n_chunks * self.data_slots, dtype=np.float64)
        data[: self.d] = weighted
        data[self.d] = weight
        return np.hstack([data.reshape(self.n_chunks, self.data_slots), tags])

    def unpack(
        self, rows: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], float, NDArray[np.float64], NDArray[np.float64]]:
        """(weighted sum, weight, tags, padding) from decrypted rows."""
        if rows.shape != (self.n_chunks, self.slots):
            want = (self.n_chunks, self.slots)
            raise EncodingError(f"rows have shape {rows.shape}, expected {want}")
        data = rows[:, : self.data_slots].reshape(-1)
        tags = rows[:, self.data_slots :]
        return data[: self.d].copy(), float(data[self.d]), tags.copy(), data[self.d + 1 :].copy()
