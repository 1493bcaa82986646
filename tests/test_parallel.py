"""A process pool in which a file that crashes its process fails alone."""

from __future__ import annotations

import pytest

from tests.helpers import crash_this_process
from tsp_cli.parallel import map_isolating_crashes


def square_or_crash(item: int) -> int:
    if item == 3:
        crash_this_process()  # what FFmpeg does on some damaged files
    return item * item


@pytest.mark.parametrize("workers", [1, 2])
def test_the_item_that_crashes_its_process_gets_on_crash_and_every_other_item_runs(workers: int) -> None:
    results = dict(map_isolating_crashes(square_or_crash, range(8), workers=workers, on_crash=lambda item: "crashed"))
    assert results == {0: 0, 1: 1, 2: 4, 3: "crashed", 4: 16, 5: 25, 6: 36, 7: 49}


def test_no_workers_runs_in_this_process_in_order() -> None:
    assert list(map_isolating_crashes(abs, [-1, -2], workers=0, on_crash=str)) == [(-1, 1), (-2, 2)]
