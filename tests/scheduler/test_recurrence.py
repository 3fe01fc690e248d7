"""Recurrence expansion against a table of cases: month ends, leap days, weeks, exceptions, zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.recurrence import RecurrenceError, expand, local_time_problems, make_rule

SH = "Asia/Shanghai"


def _local(rule_kwargs: dict, start: str, end: str) -> list[str]:
    rule = make_rule(**rule_kwargs)
    zone = rule.zone
    begin = datetime.fromisoformat(start).replace(tzinfo=zone)
    stop = datetime.fromisoformat(end).replace(tzinfo=zone)
    return [i.astimezone(zone).strftime("%Y-%m-%d %H:%M") for i in expand(rule, begin, stop)]


CASES = [
    pytest.param(
        {"freq": "once", "times": ["07:00"], "start_date": "2026-12-01"},
        ("2026-11-01", "2027-01-01"),
        ["2026-12-01 07:00"],
        id="one-off",
    ),
    pytest.param(
        # the example: Mon-Fri at 07:00 and 18:30 in December, except Christmas (a Friday)
        {
            "freq": "weekly",
            "times": ["18:30", "07:00"],
            "start_date": "2026-12-21",
            "end_date": "2026-12-27",
            "weekdays": ["mon", "tue", "wed", "thu", "fri"],
            "except_dates": ["2026-12-25"],
        },
        ("2026-12-01", "2027-01-01"),
        [
            "2026-12-21 07:00",
            "2026-12-21 18:30",
            "2026-12-22 07:00",
            "2026-12-22 18:30",
            "2026-12-23 07:00",
            "2026-12-23 18:30",
            "2026-12-24 07:00",
            "2026-12-24 18:30",
        ],
        id="weekdays-two-times-with-exception",
    ),
    pytest.param(
        {"freq": "daily", "times": ["12:00"], "start_date": "2028-02-27", "end_date": "2028-03-01"},
        ("2028-01-01", "2028-12-31"),
        ["2028-02-27 12:00", "2028-02-28 12:00", "2028-02-29 12:00", "2028-03-01 12:00"],
        id="daily-across-leap-day",
    ),
    pytest.param(
        {"freq": "daily", "times": ["12:00"], "start_date": "2027-02-27", "end_date": "2027-03-01"},
        ("2027-01-01", "2027-12-31"),
        ["2027-02-27 12:00", "2027-02-28 12:00", "2027-03-01 12:00"],
        id="daily-across-non-leap-february",
    ),
    pytest.param(
        {"freq": "monthly", "times": ["08:00"], "start_date": "2027-01-01", "month_days": [31]},
        ("2027-01-01", "2027-08-01"),
        ["2027-01-31 08:00", "2027-03-31 08:00", "2027-05-31 08:00", "2027-07-31 08:00"],
        id="day-31-skips-short-months",
    ),
    pytest.param(
        {"freq": "monthly", "times": ["08:00"], "start_date": "2027-12-01", "month_days": [-1]},
        ("2027-12-01", "2028-05-01"),
        ["2027-12-31 08:00", "2028-01-31 08:00", "2028-02-29 08:00", "2028-03-31 08:00", "2028-04-30 08:00"],
        id="last-day-of-month-incl-leap-february",
    ),
    pytest.param(
        {"freq": "monthly", "times": ["09:00"], "start_date": "2027-01-15", "month_days": [29]},
        ("2027-01-01", "2028-04-01"),
        [
            "2027-01-29 09:00",
            "2027-03-29 09:00",
            "2027-04-29 09:00",
            "2027-05-29 09:00",
            "2027-06-29 09:00",
            "2027-07-29 09:00",
            "2027-08-29 09:00",
            "2027-09-29 09:00",
            "2027-10-29 09:00",
            "2027-11-29 09:00",
            "2027-12-29 09:00",
            "2028-01-29 09:00",
            "2028-02-29 09:00",
            "2028-03-29 09:00",
        ],
        id="day-29-only-in-leap-february",
    ),
    pytest.param(
        {
            "freq": "monthly",
            "times": ["10:00"],
            "start_date": "2027-01-01",
            "month_days": [1, 15],
            "interval": 3,
            "end_date": "2027-12-31",
        },
        ("2027-01-01", "2028-01-01"),
        [
            "2027-01-01 10:00",
            "2027-01-15 10:00",
            "2027-04-01 10:00",
            "2027-04-15 10:00",
            "2027-07-01 10:00",
            "2027-07-15 10:00",
            "2027-10-01 10:00",
            "2027-10-15 10:00",
        ],
        id="quarterly-on-two-days",
    ),
    pytest.param(
        {
            "freq": "weekly",
            "times": ["19:00"],
            "start_date": "2026-12-02",
            "interval": 2,
            "weekdays": ["mon", "wed"],
        },
        ("2026-11-30", "2027-01-01"),
        # the week of Dec 2 (Mon Nov 30 is before the start), then every second week
        ["2026-12-02 19:00", "2026-12-14 19:00", "2026-12-16 19:00", "2026-12-28 19:00", "2026-12-30 19:00"],
        id="every-second-week",
    ),
    pytest.param(
        {"freq": "weekly", "times": ["06:30"], "start_date": "2026-12-03"},
        ("2026-12-01", "2026-12-20"),
        ["2026-12-03 06:30", "2026-12-10 06:30", "2026-12-17 06:30"],
        id="weekly-defaults-to-start-weekday",
    ),
    pytest.param(
        {
            "freq": "daily",
            "times": ["07:00"],
            "start_date": "2026-12-30",
            "end_date": "2027-01-02",
            "except_dates": ["2027-01-01"],
        },
        ("2026-12-01", "2027-02-01"),
        ["2026-12-30 07:00", "2026-12-31 07:00", "2027-01-02 07:00"],
        id="year-end-with-new-year-off",
    ),
    pytest.param(
        {"freq": "daily", "times": ["07:00"], "start_date": "2026-12-01", "interval": 10},
        ("2026-12-05", "2027-01-01"),
        ["2026-12-11 07:00", "2026-12-21 07:00", "2026-12-31 07:00"],
        id="window-starts-mid-rule",
    ),
    pytest.param(
        {
            "freq": "daily",
            "times": ["01:30"],
            "start_date": "2027-03-13",
            "end_date": "2027-03-15",
            "timezone": "America/New_York",
        },
        ("2027-03-01", "2027-04-01"),
        ["2027-03-13 01:30", "2027-03-14 01:30", "2027-03-15 01:30"],
        id="other-zone-wall-clock-kept-across-dst",
    ),
]


@pytest.mark.parametrize(("rule", "window", "expected"), CASES)
def test_expansion(rule, window, expected):
    assert _local(rule, *window) == expected


def test_instants_are_utc_from_the_rule_zone():
    rule = make_rule(freq="once", times=["07:00"], start_date="2026-12-01")
    (instant,) = expand(rule, datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC))
    assert instant == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 07:00 +08:00


def test_new_york_dst_gap_and_fold_are_named():
    gap = make_rule(freq="daily", times=["02:30"], start_date="2027-03-13", end_date="2027-03-15",
                    timezone="America/New_York")  # fmt: skip
    problems = local_time_problems(gap)
    assert problems == ["2027-03-14 02:30:00 does not exist in America/New_York (clocks jump)"]
    fold = make_rule(freq="once", times=["01:30"], start_date="2027-11-07", timezone="America/New_York")
    assert "happens twice" in local_time_problems(fold)[0]
    assert local_time_problems(make_rule(freq="daily", times=["02:30"], start_date="2027-01-01")) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"end_date": "2026-11-30"}, "end_date"),
        ({"times": ["25:00"]}, "times"),
        ({"times": []}, "times"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"freq": "hourly"}, "freq"),
        ({"weekdays": ["funday"]}, "weekdays"),
        ({"freq": "monthly", "month_days": [32]}, "month_days"),
        ({"month_days": [3]}, "month_days"),
        ({"start_date": "2026-13-01"}, "start_date"),
        ({"interval": 0}, "interval"),
        ({"except_dates": ["soon"]}, "except_dates"),
    ],
)
def test_bad_rules_name_the_field(kwargs, field):
    base = {"freq": "daily", "times": ["07:00"], "start_date": "2026-12-01"}
    with pytest.raises(RecurrenceError) as err:
        make_rule(**{**base, **kwargs})
    assert err.value.field == field


def test_round_trip_through_json():
    rule = make_rule(freq="weekly", times=["07:00", "18:30:15"], start_date="2026-12-01",
                     end_date="2026-12-31", weekdays=["fri", "mon"], except_dates=["2026-12-25"])  # fmt: skip
    assert type(rule).from_dict(rule.as_dict()) == rule
    assert rule.as_dict()["weekdays"] == ["mon", "fri"]
