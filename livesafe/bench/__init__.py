"""``livesafe bench``: measurements a user can run on their own hardware (an entry point: it may import
anything).

- :mod:`livesafe.bench.workload` makes the live-like workload at bench time (1280x720 30 fps H.264, GOP 2 s,
  B-frames, ~70 % speech), cached, and per-stream playlists that loop it;
- :mod:`livesafe.bench.capacity` starts the real service (``livesafe run --stream ...`` N times) as a
  subprocess, polls ``GET /v1/streams`` for lag, reads the process tree's CPU and memory from ``/proc``, and
  says how many streams kept up at each level;
- :mod:`livesafe.bench.judge` holds the pure arithmetic (lag growth, percentiles, verdicts);
- :mod:`livesafe.bench.cli` is ``livesafe bench ...`` (table and JSON).
"""
