"""The model thread's share of the cores: one fewer for each parse worker at work, never none."""

from __future__ import annotations

import pytest

from tasks.core.scheduling import ModelThread


@pytest.mark.parametrize(("most", "busy", "threads"), [
    (2, 0, 2), (2, 1, 1), (2, 2, 1), (1, 0, 1), (1, 1, 1), (8, 2, 6), (8, 0, 8),
])
def test_the_model_gives_up_a_core_to_each_busy_parse_worker(most, busy, threads):
    thread = ModelThread(busy_elsewhere=lambda: busy)
    try:
        assert thread.threads(most) == threads
    finally:
        thread.close()


def test_nothing_busy_elsewhere_by_default():
    thread = ModelThread()
    try:
        assert thread.threads(4) == 4
        assert thread.run(lambda: "on the model thread") == "on the model thread"
    finally:
        thread.close()
