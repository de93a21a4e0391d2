import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/live/x_standin.py

from hepta.live.synth import SynthConfig, synthesize_stream  # noqa: E402


@pytest.fixture(scope="session")
def stream_20k():
    """20,000 posts (plus edits and re-sent duplicates) in English and Japanese."""
    return synthesize_stream(SynthConfig(posts=20_000, seed=7, minutes=240))


class FakeClock:
    """Epoch seconds that move only when something sleeps: waits are recorded, none is slept."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_clock():
    return FakeClock()
