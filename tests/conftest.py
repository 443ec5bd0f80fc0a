"""Test-wide settings: one torch thread (tiny models; avoids oversubscribing 2 cores), and
the two deployment files collected first, so that under ``pytest -n 3 --dist loadfile``
(``make test``) each starts at once on a worker of its own and the rest runs beside
them: they mostly wait on Flower's polling, and started last they would be the tail."""

import pytest
import torch

torch.set_num_threads(1)

#: the longest files, mostly waiting on a real Flower deployment: run them first
FIRST = ("tests/runtime/test_flower_pool.py", "tests/runtime/test_readme_verbatim.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: every other test keeps its order
