"""Reports round a half away from zero, as people do (a black-box pass read an NPS of
3.125 as 3.12 and a 90.125 average as 90.12: binary floats round half to even)."""

from __future__ import annotations

import pytest

from shared.kernel.numbers import rounded


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (90.125, 2, 90.13),
        (3.125, 2, 3.13),
        (-3.125, 2, -3.13),
        (2.675, 2, 2.68),
        (66.666666, 2, 66.67),
        (0.1 + 0.2, 2, 0.3),
        (0.66665, 4, 0.6667),
        (100.0, 2, 100.0),
        (-0.001, 2, 0.0),  # not -0.0
        (float("inf"), 2, float("inf")),  # as it is: a misconfigured figure is no 500
    ],
)
def test_a_half_rounds_away_from_zero(value: float, digits: int, expected: float) -> None:
    assert repr(rounded(value, digits)) == repr(expected)  # repr: -0.0 is not 0.0


def test_a_target_is_judged_on_the_exact_figure_not_the_one_shown() -> None:
    """99.995 % compliant is not the 100 % target, and is not shown as 100 either."""
    from services.feedback.compliance import FALSE, TRUE
    from services.feedback.read_models import Tally, target_checks
    from shared.app.config import FeedbackSettings

    t = Tally(tickets=20_000)
    t.compliance[TRUE], t.compliance[FALSE] = 19_999, 1
    checks = {c["measure"]: c for c in target_checks(t, FeedbackSettings())}
    assert (checks["compliance_rate"]["value"], checks["compliance_rate"]["met"]) == (99.99, False)
    assert checks["nps"]["met"] is None  # no follow-up: no figure


def test_a_percentage_is_never_shown_as_100_or_0_when_it_is_not() -> None:
    """The one rule compliance rates, what-if rates and KPI measures are shown by."""
    from shared.kernel.numbers import percent_shown

    assert [percent_shown(v) for v in (99.998, 0.002, 100.0, 0.0, 66.666, -12.5)] == [
        99.99,
        0.01,
        100.0,
        0.0,
        66.67,
        -12.5,
    ]


def test_an_average_score_and_a_kpi_score_are_shown_by_the_same_rule() -> None:
    """249 follow-ups of 100 and one of 99: not a perfect average, nor a perfect KPI."""
    from services.feedback.read_models import _mean

    assert (_mean(249 * 100 + 99, 250), _mean(100 * 3, 3)) == (99.99, 100.0)
