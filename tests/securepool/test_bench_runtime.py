"""bench runtime: every reply is checked, so a wrong one stops the measurement."""

from __future__ import annotations

import pytest

from securepool.bench import runtime


def test_inprocess_exchanges_are_checked_and_counted() -> None:
    result = runtime._exchanges(runtime._InProcess(3), 2, 16)
    assert len(result["times_s"]) == 2 and result["pushes"] == 3


def test_a_wrong_reply_is_not_timed_as_a_good_one() -> None:
    driver = runtime._InProcess(3)
    driver.apps["p1"] = runtime.DigestNode("p2")  # answers as another node
    with pytest.raises(RuntimeError, match="wrong or missing"):
        runtime._exchanges(driver, 1, 16)
