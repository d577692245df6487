"""Analyzers: models that turn media samples and transcripts into
:class:`~livesafe.core.events.Signal` values."""
