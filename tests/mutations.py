"""A Hypothesis strategy the decoder fuzz tests share: byte edits of a valid encoding."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with 1 to 4 edits: flip a bit, set a byte, delete or insert a run, cut
    the tail, or overwrite 4 bytes with a count or length of ~4 G."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        kind = draw(st.sampled_from(["flip", "set", "delete", "insert", "cut", "big"]))
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            out[at] = draw(st.integers(0, 255))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif kind == "cut":
            del out[at:]
        else:
            out[at : at + 4] = b"\xff\xff\xff\xff"
    return bytes(out)
