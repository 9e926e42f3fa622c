from mailrelay.spool.schedule import backoff


def test_backoff_doubles_from_first_up_to_cap() -> None:
    assert [backoff(n, first=300, cap=4000) for n in (0, 1, 2, 3, 4, 50)] == [300, 600, 1200, 2400, 4000, 4000]
    assert backoff(10_000, first=1, cap=1e30) == 2.0 ** 30  # the exponent stops at 30
    assert isinstance(backoff(0, first=10, cap=600), float)
