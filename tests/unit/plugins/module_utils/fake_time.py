"""A clock the unit tests move by hand: ``sleep`` advances it at once, so waits and timeouts run in no time."""

from __future__ import annotations


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    __call__ = clock

    def sleep(self, seconds: float) -> None:
        self.now += seconds
