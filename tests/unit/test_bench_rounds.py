"""bench.run's rounds: the figures shown are the median round's."""

from __future__ import annotations

from bench.scenarios import median_index


def test_the_median_round_is_chosen_by_value_not_by_position() -> None:
    assert median_index([0.30, 0.10, 0.20]) == 2
    assert median_index([0.5]) == 0
    assert median_index([0.4, 0.1, 0.3, 0.2]) == 3  # an even count: the lower of the two middle values
