"""Where each value sits in the CKKS slots of an HE upload.

The payload is ``[(w/u) * update (d values), w/u]``. Every chunk ends with
``tag_slots`` contribution tags. Without a fold (``fold_dim = 0``) the payload fills
chunks of ``slots - tag_slots`` data slots (the last chunk zero-padded)::

    chunk k: | data slots (payload[k*D : (k+1)*D], zero-padded) | tag slots |

With a fold dimension ``F`` (HE binding, protocols/he/fold.py) slot ``p`` of a chunk is in
*column* ``p mod F``, and a fold adds up each column. The columns are reserved so that a
fold keeps the pieces apart: the last ``tag_slots`` columns hold only the tags (at the
chunk's end, as above), the column before them only the weight (chunk 0, first row),
and the update fills the other ``F - tag_slots - 1`` columns, row by row::

    row i of chunk k: | update (F - tag_slots - 1) | weight or 0 | 0 ... 0 or tags |

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
    fold_dim: int = 0

    def __post_init__(self) -> None:
        if self.d < 1:
            raise EncodingError(f"update length must be >= 1, got {self.d}")
        if not 1 <= self.tag_slots < self.slots:
            raise EncodingError(f"tag_slots must be in 1..{self.slots - 1}")
        f = self.fold_dim
        if f and (f & (f - 1) or f > self.slots // 2 or f < self.tag_slots + 2):
            raise EncodingError(
                f"fold_dim must be a power of two in {self.tag_slots + 2}..{self.slots // 2}"
                f" (0: no fold), got {f}"
            )

    @property
    def update_columns(self) -> int:
        """Columns of a fold that carry the update (fold_dim > 0)."""
        return self.fold_dim - self.tag_slots - 1

    @property
    def weight_column(self) -> int:
        return self.fold_dim - self.tag_slots - 1

    @property
    def data_slots(self) -> int:
        """Payload slots per chunk (with a fold: the update slots; the weight has its own)."""
        if not self.fold_dim:
            return self.slots - self.tag_slots
        return (self.slots // self.fold_dim) * self.update_columns

    @property
    def n_chunks(self) -> int:
        if not self.fold_dim:
            return -(-(self.d + 1) // self.data_slots)
        return max(1, -(-self.d // self.data_slots))

    def _update_positions(self) -> NDArray[np.int64]:
        """Flat (chunk-major) slot index of each payload value but the weight, in order."""
        k = self.n_chunks
        if not self.fold_dim:
            cols = np.arange(self.data_slots, dtype=np.int64)
            return (np.arange(k, dtype=np.int64)[:, None] * self.slots + cols).reshape(-1)
        f = self.fold_dim
        rows = self.slots // f
        base = np.arange(k * rows, dtype=np.int64)[:, None] * f
        return (base + np.arange(self.update_columns, dtype=np.int64)).reshape(-1)

    def _weight_position(self) -> int:
        if not self.fold_dim:
            return int(self._update_positions()[self.d])
        return self.weight_column

    def _tag_positions(self) -> NDArray[np.int64]:
        """Shape (n_chunks, tag_slots): the last tag_slots slots of every chunk."""
        k = self.n_chunks
        cols = np.arange(self.slots - self.tag_slots, self.slots, dtype=np.int64)
        return np.arange(k, dtype=np.int64)[:, None] * self.slots + cols

    @property
    def padding(self) -> int:
        """Slots that must decrypt to 0 in an honest aggregate."""
        return self.n_chunks * self.slots - self.d - 1 - self.n_chunks * self.tag_slots

    def pack(
        self, weighted: NDArray[np.float64], weight: float, tags: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Rows to encrypt, shape ``(n_chunks, slots)``."""
        if weighted.shape != (self.d,):
            raise EncodingError(f"weighted update has shape {weighted.shape}, expected ({self.d},)")
        if tags.shape != (self.n_chunks, self.tag_slots):
            raise EncodingError(f"tags have shape {tags.shape}")
        flat = np.zeros(self.n_chunks * self.slots, dtype=np.float64)
        flat[self._update_positions()[: self.d]] = weighted
        flat[self._weight_position()] = weight
        flat[self._tag_positions()] = tags
        return flat.reshape(self.n_chunks, self.slots)

    def unpack(
        self, rows: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], float, NDArray[np.float64], NDArray[np.float64]]:
        """(weighted sum, weight, tags, padding) from decrypted rows."""
        if rows.shape != (self.n_chunks, self.slots):
            want = (self.n_chunks, self.slots)
            raise EncodingError(f"rows have shape {rows.shape}, expected {want}")
        flat = rows.reshape(-1)
        used = np.zeros(flat.size, dtype=bool)
        upd = self._update_positions()[: self.d]
        w = self._weight_position()
        tag = self._tag_positions()
        used[upd] = True
        used[w] = True
        used[tag] = True
        return flat[upd].copy(), float(flat[w]), flat[tag].copy(), flat[~used].copy()
