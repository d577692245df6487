"""``livesafe eval``: measure the text classifier, speech recognition and the motion analyzer on the
labelled shared data sets.

* :mod:`livesafe.eval.datasets`: readers of the labelled text and speech data sets (and the splits
  ``scripts/train_text_heads.py`` shares);
* :mod:`livesafe.eval.video`: the fight-clip data set and its split (shared with ``scripts/train_motion.py``);
* :mod:`livesafe.eval.suite`: the held-out functional test suite (our own templates, never trained or tuned
  on), generated deterministically from ``data/heldout_suite.yaml``;
* :mod:`livesafe.eval.registry`: the data sets by name (:data:`~livesafe.eval.registry.DATASETS`);
* :mod:`livesafe.eval.metrics`: precision / recall / F1, calibration (ECE) and word error rate;
* :mod:`livesafe.eval.runner`: scoring the data sets (:func:`~livesafe.eval.runner.run_eval`);
* :mod:`livesafe.eval.cli`: the command (argument parsing, printing): :func:`main`.
"""

from __future__ import annotations

from livesafe.eval.cli import main

__all__ = ["main"]
