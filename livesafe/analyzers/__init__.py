"""Analyzers: models that turn media samples and transcripts into :class:`~livesafe.events.Signal` values."""
