"""The arithmetic of ``make cost`` (devtools/cost.py): what it derives from the measured ticks and how it
scales them. Pure functions; the measured part runs on the emulators in ``make cost`` itself."""

from __future__ import annotations

import pytest

from devtools import cost


def test_a_job_day_is_the_run_less_its_empty_ticks_scaled_to_1440_ticks():
    measured = {"ticks": 360, "jobs": 100, "reads": 36_000 + 360 * 5, "writes": 500 + 360, "api": 36_000,
                "events": 100}
    empty = {"ticks": 30, "reads": 30 * 5, "writes": 30, "api": 0, "events": 0, "empty_queries": 90}
    per = cost.per_job_day(measured, empty)
    assert per == {"reads": 1440.0, "writes": 20.0, "api": 1440.0, "events": 4.0}


def test_a_tick_without_jobs_bills_each_empty_query_as_one_read():
    empty = {"ticks": 30, "reads": 60, "writes": 30, "api": 0, "empty_queries": 90}
    assert cost.per_tick_of(empty, "reads") == 5.0  # (60 documents + 90 empty queries) / 30 ticks
    assert cost.per_tick_of(empty, "writes") == 1.0


def _inputs():
    per = {"today": {"reads": 1440, "writes": 16, "api": 1440, "events": 4},
           "cadence": {"reads": 292, "writes": 20, "api": 292, "events": 4},
           "watched": {"reads": 4, "writes": 20, "api": 0, "events": 4}}
    fixed = {"today": {"ticks": 10, "reads": 30, "writes": 10, "api": 0, "empty_queries": 20},
             "cadence": {"ticks": 10, "reads": 30, "writes": 10, "api": 0, "empty_queries": 40},
             "watched": {"ticks": 10, "reads": 190, "writes": 20, "api": 10, "empty_queries": 40}}
    return per, fixed


def test_the_model_adds_per_job_figures_by_path_and_per_tick_figures_by_scope():
    per, fixed = _inputs()
    day = cost.model(per, fixed, 1000, watched=0.6, gemini=0.25, scopes=10, webhooks=False)
    # today: every job on every tick, plus 1,440 job-less ticks (5 reads: 3 documents, 2 empty queries)
    assert day["today"]["reads"] == pytest.approx(1000 * 1440 + 1440 * 5)
    assert day["today"]["api"] == pytest.approx(1000 * 1440)
    # new: 400 GET-path jobs on the cadence, 600 watched; a tick costs 7 reads, each scope 16 more
    assert day["new"]["reads"] == pytest.approx(400 * 292 + 600 * 4 + 1440 * (7 + 10 * 16))
    assert day["new"]["api"] == pytest.approx(400 * 292 + 1440 * 10 * 1)
    assert day["new"]["messages"] == day["today"]["messages"] == 1000 * 4 + 1000


def test_webhooks_add_a_delivery_and_its_fetch_per_gemini_ending():
    per, fixed = _inputs()
    off = cost.model(per, fixed, 1000, watched=0.6, gemini=0.25, scopes=10, webhooks=False)
    on = cost.model(per, fixed, 1000, watched=0.6, gemini=0.25, scopes=10, webhooks=True)
    assert on["new"]["api"] - off["new"]["api"] == pytest.approx(250)
    assert on["new"]["invocations"] - off["new"]["invocations"] == pytest.approx(250)
    assert on["today"] == off["today"]


def test_prices_bill_reads_writes_messages_of_at_least_one_kib_and_invocations():
    prices = cost.Prices(read_per_100k=0.06, write_per_100k=0.18, pubsub_per_tib=40.0, event_kib=0.5,
                         invocation_per_million=0.40)
    assert prices.dollars(100_000, 0, 0, 0) == pytest.approx(0.06)
    assert prices.dollars(0, 100_000, 0, 0) == pytest.approx(0.18)
    assert prices.dollars(0, 0, 2 ** 30, 0) == pytest.approx(40.0)  # 2^30 messages of 1 KiB (0.5 rounds up) = 1 TiB
    assert prices.dollars(0, 0, 0, 1_000_000) == pytest.approx(0.40)
