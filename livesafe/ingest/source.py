"""The one interface every media source implements, and the bounded hand-off from decoder to event loop.

A source yields :class:`~livesafe.core.events.VideoSample` and :class:`~livesafe.core.events.AudioChunk`
values in media-time order. Analyzers never learn where a sample came from. Decoding happens in a thread;
the samples cross to the event loop through a :class:`SampleChannel` that never holds more than its
capacity: in ``fast`` pacing the decoder waits for the consumer (nothing is lost, files are analysed
completely); in ``realtime`` pacing a slow consumer makes the channel drop the oldest video sample first
(the newest frame wins) and then the oldest audio, and every drop is counted."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from livesafe.core.events import AudioChunk, MediaSample, VideoSample
from livesafe.core.policy import SamplingPolicy

Pacing = Literal["fast", "realtime"]


class SourceError(RuntimeError):
    """A source that cannot be opened or decoded; the message names the source and the cause."""


@dataclass(frozen=True, slots=True)
class IngestOptions:
    #: Video frames sampled per media second.
    video_fps: float = 1.0
    #: Target length of the audio windows handed to speech recognition (cut at quiet points).
    audio_window_s: float = 5.0
    #: ``fast``: as fast as the machine can; ``realtime``: paced like a live stream.
    pacing: Pacing = "fast"
    #: Samples buffered between decoder thread and event loop (the bound in ``fast`` pacing).
    queue_size: int = 16
    #: Live (``realtime``) limits: video samples waiting (the newest win), and audio water marks: past
    #: ``audio_high_s`` seconds of queued audio the oldest is dropped down to ``audio_low_s``.
    video_slots: int = 2
    audio_high_s: float = 30.0
    audio_low_s: float = 20.0
    #: Sampled frames are scaled down to at most this width (keeps memory and model cost bounded).
    max_width: int = 640
    #: Decode errors tolerated before the source gives up.
    max_decode_errors: int = 50
    #: Decode only key frames where the codec allows it: far less CPU, samples at key-frame times only.
    #: The pipeline turns it off (:class:`KeyframeControl`) when an analyzer needs a dense feed (motion).
    keyframes_only: bool = False
    #: Decode only what the samples need (``av_source.DecodeSkipper``: H.264 and HEVC); off: every frame.
    skip_decode: bool = True
    #: Segment audio into utterances with Silero VAD (silence is dropped, never transcribed); without it
    #: audio is cut into ``audio_window_s`` windows at quiet points.
    vad: bool = True


@dataclass(slots=True)
class IngestStats:
    """Counters per stream; mutated by the decoder thread, read by anyone (ints are atomic enough)."""

    frames_decoded: int = 0
    #: Video packets not decoded at all, the next sample being due at or after the next key frame.
    packets_skipped: int = 0
    frames_sampled: int = 0
    video_dropped: int = 0
    audio_chunks: int = 0
    audio_dropped: int = 0
    audio_dropped_s: float = 0.0
    audio_seconds: float = 0.0
    #: Audio handed on as speech by voice-activity detection (the rest is silence, never transcribed).
    voiced_seconds: float = 0.0
    decode_errors: int = 0
    #: The video sampling rate in force (it changes with adaptive sampling).
    video_fps: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def ingest_options(sampling: SamplingPolicy, pacing: Pacing) -> IngestOptions:
    """Ingest options as a policy's ``sampling`` section asks."""
    return IngestOptions(
        video_fps=sampling.video_fps,
        audio_window_s=sampling.audio_window_s,
        keyframes_only=sampling.keyframes_only,
        vad=sampling.vad,
        pacing=pacing,
    )


class MediaSource(Protocol):
    """What the pipeline needs of a source."""

    stream_id: str

    @property
    def stats(self) -> IngestStats: ...

    def samples(self) -> AsyncIterator[MediaSample]: ...

    def set_video_fps(self, fps: float) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class KeyframeControl(Protocol):
    """A source that can decode key frames only (``keyframes_only``) and be told not to.

    Key frames come every one to several seconds, so keyframe-only decoding cannot feed an analyzer that
    needs, say, 8 frames a second; the pipeline calls ``set_keyframes_only(False)`` before the first
    sample when such an analyzer is enabled. Sources that always decode every frame (WebRTC) need not
    implement it.
    """

    def set_keyframes_only(self, enabled: bool) -> None: ...


class _End:
    """Marks the end of a channel, carrying the error that ended it, if any."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class ChannelClosedError(RuntimeError):
    """The consumer went away; the producer thread should stop."""


class SampleChannel:
    """A bounded, thread-to-event-loop channel of media samples. See the module docstring for the policy."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, capacity: int, pacing: Pacing, stats: IngestStats, *,
        video_slots: int = 2, audio_high_s: float = 30.0, audio_low_s: float = 20.0,
    ) -> None:
        if capacity < 1 or video_slots < 1:
            raise ValueError(f"channel capacity and video slots must be >= 1, got {capacity}, {video_slots}")
        if not 0 <= audio_low_s < audio_high_s:
            raise ValueError(f"need 0 <= audio_low_s < audio_high_s, got {audio_low_s}, {audio_high_s}")
        self._loop = loop
        self._capacity = capacity
        self._video_slots = video_slots
        self._audio_high_s = audio_high_s
        self._audio_low_s = audio_low_s
        self._pacing = pacing
        self._stats = stats
        self._items: deque[MediaSample | _End] = deque()
        self._cond = threading.Condition()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    # -- producer side (decoder thread) ---------------------------------------------------------------
    def put(self, item: MediaSample) -> None:
        """Hand over a sample: waits for room in ``fast`` pacing; in ``realtime`` never waits, drops."""
        with self._cond:
            if self._pacing == "fast":
                while len(self._items) >= self._capacity and not self._closed:
                    self._cond.wait(0.1)
            if self._closed:
                raise ChannelClosedError
            self._items.append(item)
            if self._pacing == "realtime":
                self._shed()
        self._wake()

    def _shed(self) -> None:
        """Live limits: the newest video samples win; audio is cut back from the high to the low mark."""
        video = [i for i, x in enumerate(self._items) if isinstance(x, VideoSample)]
        for i in reversed(video[: max(0, len(video) - self._video_slots)]):
            del self._items[i]
            self._stats.video_dropped += 1
        audio_s = sum(x.duration for x in self._items if isinstance(x, AudioChunk))
        if audio_s > self._audio_high_s:
            for x in list(self._items):
                if audio_s <= self._audio_low_s:
                    break
                if isinstance(x, AudioChunk):
                    self._items.remove(x)
                    audio_s -= x.duration
                    self._stats.audio_dropped += 1
                    self._stats.audio_dropped_s += x.duration
        while len(self._items) > self._capacity:  # an absolute bound whatever the mix
            self._drop_one()

    def finish(self, error: BaseException | None = None) -> None:
        """End of stream (``error`` set when decoding failed); never blocks."""
        with self._cond:
            self._items.append(_End(error))
        self._wake()

    def _drop_one(self) -> None:
        for kind in (VideoSample, AudioChunk):
            for i, item in enumerate(self._items):
                if isinstance(item, kind):
                    del self._items[i]
                    if kind is VideoSample:
                        self._stats.video_dropped += 1
                    else:
                        self._stats.audio_dropped += 1
                    return

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    # -- consumer side (event loop) -------------------------------------------------------------------
    async def get(self) -> MediaSample | None:
        """The next sample, or None at the end; re-raises a decoder error as :class:`SourceError`."""
        while True:
            with self._cond:
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify_all()
                    break
                self._ready.clear()
            await self._ready.wait()
        if isinstance(item, _End):
            with self._cond:
                self._items.appendleft(item)  # stay ended for any later get()
            if item.error is not None:
                if isinstance(item.error, SourceError):
                    raise item.error
                raise SourceError(str(item.error)) from item.error
            return None
        return item

    def close(self) -> None:
        """Consumer is done: unblock and stop the producer."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()
