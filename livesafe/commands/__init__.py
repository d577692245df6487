"""Subcommands of the ``livesafe`` command line that grew past a few lines each (see :mod:`livesafe.cli`)."""
