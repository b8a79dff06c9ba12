"""TravelAnomalyDetector: country changes faster than travel allows."""

from __future__ import annotations

import threading

import pytest

from ig_gate.geo import GeoConfigError, TravelAnomalyDetector

WINDOW = 3600.0


@pytest.fixture
def detector() -> TravelAnomalyDetector:
    return TravelAnomalyDetector(window_s=WINDOW, max_subjects=100)


def test_staying_in_one_country_is_never_anomalous(detector: TravelAnomalyDetector) -> None:
    assert [detector.observe("alice", "DE", t) for t in (0, 10, 20)] == [False, False, False]


def test_second_country_within_window_is_anomalous(detector: TravelAnomalyDetector) -> None:
    assert not detector.observe("alice", "DE", 0)
    assert detector.observe("alice", "BR", WINDOW - 1)


def test_second_country_after_window_is_plausible_travel(detector: TravelAnomalyDetector) -> None:
    assert not detector.observe("alice", "DE", 0)
    assert not detector.observe("alice", "BR", WINDOW + 1)


def test_window_counts_from_the_last_request_in_the_old_country(detector: TravelAnomalyDetector) -> None:
    detector.observe("alice", "DE", 0)
    detector.observe("alice", "DE", 5000)
    assert detector.observe("alice", "BR", 5000 + WINDOW - 1)


def test_flag_sticks_for_the_window_so_retrying_does_not_clear_it(detector: TravelAnomalyDetector) -> None:
    detector.observe("alice", "DE", 0)
    assert detector.observe("alice", "BR", 100)
    assert detector.observe("alice", "BR", 101)
    assert detector.observe("alice", "BR", 100 + WINDOW - 1)
    assert not detector.observe("alice", "BR", 100 + WINDOW)


def test_unknown_country_is_no_evidence(detector: TravelAnomalyDetector) -> None:
    assert not detector.observe("alice", None, 0)
    assert len(detector) == 0
    detector.observe("alice", "DE", 1)
    assert not detector.observe("alice", None, 2)
    assert detector.observe("alice", "BR", 3)
    assert detector.observe("alice", None, 4)  # reports the current flag
    assert not detector.observe("alice", "BR", 10 + WINDOW)  # the None did not reset the country


def test_subjects_are_independent(detector: TravelAnomalyDetector) -> None:
    detector.observe("alice", "DE", 0)
    assert not detector.observe("bob", "BR", 1)
    assert not detector.observe("alice", "DE", 2)


def test_memory_is_bounded_and_least_recently_seen_is_forgotten() -> None:
    detector = TravelAnomalyDetector(window_s=WINDOW, max_subjects=2)
    detector.observe("alice", "DE", 0)
    detector.observe("bob", "DE", 1)
    detector.observe("alice", "DE", 2)  # alice is now the most recent
    detector.observe("carol", "DE", 3)  # evicts bob
    assert len(detector) == 2
    assert detector.observe("alice", "BR", 4)  # still remembered
    assert not detector.observe("bob", "BR", 5)  # forgotten, so a first sighting


def test_concurrent_observers_keep_the_bound() -> None:
    detector = TravelAnomalyDetector(window_s=WINDOW, max_subjects=50)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(2000):
                detector.observe(f"s{(i + offset) % 80}", "DE" if i % 2 else "FR", float(i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(detector) == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_s": 0}, "anomaly_window_s"),
        ({"window_s": -5}, "anomaly_window_s"),
        ({"max_subjects": 0}, "max_subjects"),
    ],
)
def test_invalid_configuration_is_a_named_error(kwargs: dict, message: str) -> None:
    with pytest.raises(GeoConfigError, match=message):
        TravelAnomalyDetector(**kwargs)
