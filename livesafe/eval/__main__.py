"""``python -m livesafe.eval``: the ``livesafe eval`` command."""

from livesafe.eval.cli import main

raise SystemExit(main())
