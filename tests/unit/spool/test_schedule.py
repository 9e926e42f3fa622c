from mailrelay.spool.schedule import backoff, expired, warn_delay


def test_backoff_doubles_from_first_up_to_cap() -> None:
    assert [backoff(n, first=300, cap=4000) for n in (0, 1, 2, 3, 4, 50)] == [300, 600, 1200, 2400, 4000, 4000]
    assert backoff(10_000, first=1, cap=1e30) == 2.0 ** 30  # the exponent stops at 30
    assert isinstance(backoff(0, first=10, cap=600), float)


def test_expired_from_max_lifetime_on() -> None:
    assert not expired(1000.0, 1000.0 + 86399, 86400)
    assert expired(1000.0, 1000.0 + 86400, 86400)
    assert expired(1000.0, 1000.0 + 90000, 86400)


def test_warn_delay_from_delay_warning_on_and_never_when_off() -> None:
    assert not warn_delay(0.0, 14399.0, 14400)
    assert warn_delay(0.0, 14400.0, 14400)
    assert not warn_delay(0.0, 1e9, 0)
