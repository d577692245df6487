"""livesafe: a live-stream safety monitor with a pure, replayable decision core."""

__version__ = "0.1.0"
