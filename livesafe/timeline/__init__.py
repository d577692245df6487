"""The timeline: one durable, append-only record per stream session of everything the core saw and decided.

Every broadcast of a stream id is a *session* (:func:`~livesafe.timeline.sessions.new_session_id`). Its
timeline holds, in order: the session's start (source, metadata, policy hash, analyzer models), every
transcript, signal (with its evidence) and tick, every reviewer verdict, risk update, intervention and lift,
the backend's acks, nacks and applied reports, the stream's state changes, and the session's end. The
policy's validated content is stored once by its hash; the thumbnails of frames that scored are kept beside
the timeline. Replay (:mod:`livesafe.timeline.replay`) feeds a session's recorded inputs to a fresh core and
gets every recorded decision back, byte for byte.

``entries`` (record types), ``store`` (Redis), ``replay`` (pure), ``evidence`` (thumbnails), ``audit``
(the per-stream audit trail), ``sessions`` (session ids).
"""
