"""The pure decision core: no I/O, no clock, no import of anything else in livesafe.

``events`` (typed values), ``policy`` (YAML validated into dataclasses), ``risk`` (evidence per category over
media time), ``ladder`` (tiers, hysteresis, dwell, cooldowns, lifts), ``monitor`` (``Monitor.step``/``tick``/
``review``: inputs in, decisions out), ``sampling`` (which frames go to which analyzer, the adaptive rate) and
``languages`` (the speech languages a policy may name). Everything above this package (ingest, analyzers,
delivery, the timeline, entry points) imports it; it imports none of them, so live monitoring and replay
share exactly this code.
"""
