"""Files and URLs decoded with PyAV (FFmpeg) in a worker thread.

Video is sampled at ``video_fps`` in media time (only sampled frames are converted to RGB and scaled);
audio is resampled to 16 kHz mono float32 and cut into windows for speech recognition. Media time starts
at 0 at the container's first timestamp. ``realtime`` pacing sleeps so that a file plays out like a live
stream; ``fast`` decodes as fast as the consumer takes samples.

Only what sampling needs is decoded (:class:`DecodeSkipper`): frames no other frame refers to are skipped
while the next sample is more than a few frames away, and when the stream's key frames come at a regular
interval and the next sample is due at or after the next key frame, the packets before it are not decoded
at all. A 720p30 H.264 stream with a 2 s GOP sampled at 1 fps costs about 2.3x less CPU to decode than
decoding every frame (0.021 vs 0.049 CPU s per media second, ``make bench``), with every sample at the
same time as before. Irregular key frames (scene-cut GOPs, VP8 webm files) are never skipped to.

Errors: a source that cannot be opened, has neither audio nor video, or keeps failing to decode raises
:class:`~livesafe.ingest.source.SourceError` naming the source. Isolated corrupt packets are counted in
``stats.decode_errors`` and skipped, as a live monitor must.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from livesafe.core.events import AudioChunk, MediaSample, VideoSample
from livesafe.ingest.source import (
    ChannelClosedError,
    IngestOptions,
    IngestStats,
    SampleChannel,
    SourceError,
)
from livesafe.ingest.vad import VadOptions, VadSegmenter

log = logging.getLogger(__name__)

AUDIO_RATE = 16000
#: Codecs whose frame references FFmpeg tracks well enough to skip decoding safely (DecodeSkipper).
SKIPPABLE_CODECS = frozenset({"h264", "hevc"})
#: A final audio remainder shorter than this is not worth transcribing.
MIN_TAIL_S = 0.5


class AudioWindower:
    """Cuts a continuous 16 kHz mono signal into utterance-sized windows at quiet points.

    A window is closed once it holds at least ``window_s`` of audio and a pause of ``MIN_PAUSE_S``
    follows the window's first half, cutting in the middle of the longest such pause, so that words
    are not split between windows. Continuous sound is cut hard at ``2 * window_s``. Media time is
    tracked by sample count.
    (Voice-activity detection proper is the ingest issue's; this keeps speech whole for now.)
    """

    FRAME_S = 0.02
    #: RMS below this (about -40 dBFS) or below 5 % of the window's loudest frame counts as quiet.
    QUIET_RMS = 0.01
    #: A pause at least this long is a place to cut.
    MIN_PAUSE_S = 0.25

    def __init__(self, stream_id: str, window_s: float, rate: int = AUDIO_RATE) -> None:
        self.stream_id = stream_id
        self.rate = rate
        self.window = int(window_s * rate)
        self.max_window = 2 * self.window
        self.frame = int(self.FRAME_S * rate)
        self._buf = np.zeros(0, dtype=np.float32)
        self._start: float | None = None

    def push(self, media_ts: float, samples: npt.NDArray[np.float32]) -> Iterator[AudioChunk]:
        if self._start is None:
            self._start = media_ts
        self._buf = np.concatenate([self._buf, samples])
        while len(self._buf) >= self.window and (cut := self._cut_point()) is not None:
            yield AudioChunk(self.stream_id, round(self._start, 6), self._buf[:cut].copy(), self.rate)
            self._buf = self._buf[cut:]
            self._start += cut / self.rate

    def _cut_point(self) -> int | None:
        """Middle of the longest pause (>= MIN_PAUSE_S) after the window's first half, if any."""
        usable = min(len(self._buf), self.max_window) // self.frame * self.frame
        rms = np.sqrt(np.mean(self._buf[:usable].reshape(-1, self.frame) ** 2, axis=1))
        first = (self.window // 2) // self.frame
        if first >= len(rms):
            return None
        quiet = rms[first:] < max(self.QUIET_RMS, 0.05 * float(rms.max()))
        best_len, best_mid, run = 0, -1, 0
        for i, q in enumerate(quiet):
            run = run + 1 if q else 0
            if run > best_len:
                best_len, best_mid = run, i - run // 2
        if best_len * self.FRAME_S >= self.MIN_PAUSE_S or (best_len and len(self._buf) >= self.max_window):
            return (first + best_mid) * self.frame + self.frame // 2
        if len(self._buf) >= self.max_window:
            return usable  # continuous sound: hard cut at the longest window
        return None

    def flush(self) -> Iterator[AudioChunk]:
        if self._start is not None and len(self._buf) >= MIN_TAIL_S * self.rate:
            yield AudioChunk(self.stream_id, round(self._start, 6), self._buf.copy(), self.rate)
        self._buf = np.zeros(0, dtype=np.float32)


class DecodeSkipper:
    """Decides, packet by packet, how much of a video stream must be decoded to take the samples due.

    Two savings, both exact (every due sample is the same frame as with full decoding):

    * a packet whose frame shows before the next sample is due, and that no other frame refers to
      (B-frames in most H.264 streams), is skipped by the decoder (``skip_frame = NONREF``): the sample is
      the first frame at or after the due time, so such a frame is never sampled;
    * when the last ``REGULAR_GOPS`` intervals between key frames were equal (within half a frame) and the
      next sample is due at or after the next key frame, packets are not decoded at all until a key frame
      comes. Nothing after a key frame refers to what came before it, so decoding resumes exactly there.
      This one is exact while key frames keep their interval (live encoders use a fixed one): a key frame
      that comes later than the interval predicts makes that sample late by the difference, and it is
      still taken from a whole frame, never from one whose references were skipped.

    Not thread-safe: the decoder thread owns it.
    """

    REGULAR_GOPS = 3
    #: Samples closer than this many frames apart are dense: non-reference frames are not skipped.
    DENSE_FRAMES = 6
    #: Key-frame intervals shorter than this are not worth skipping to (all-intra or broken streams).
    MIN_GOP_S = 0.5

    def __init__(self, frame_s: float) -> None:
        self.frame_s = frame_s
        self._last_key: float | None = None
        self._gops: list[float] = []
        self._skipping = False
        self.skipped_packets = 0

    def next_key(self) -> float | None:
        """When the next key frame is expected, if key frames have come regularly; else None."""
        if self._last_key is None or len(self._gops) < self.REGULAR_GOPS:
            return None
        recent = self._gops[-self.REGULAR_GOPS:]
        if max(recent) - min(recent) > self.frame_s / 2 or recent[-1] < self.MIN_GOP_S:
            return None
        return self._last_key + recent[-1]

    def skip_packet(self, pts_s: float | None, is_key: bool, next_due: float) -> bool:
        """Whether a video packet need not be decoded, the next sample being due at ``next_due``."""
        if is_key:
            self._skipping = False
            if pts_s is not None:
                if self._last_key is not None and pts_s > self._last_key:
                    self._gops = [*self._gops[-(self.REGULAR_GOPS - 1):], pts_s - self._last_key]
                self._last_key = pts_s
            return False
        if not self._skipping:
            key = self.next_key()
            self._skipping = key is not None and next_due >= key - self.frame_s / 2
        if self._skipping:
            self.skipped_packets += 1
        return self._skipping

    def skip_frame(self, pts_s: float | None, next_due: float, fps: float) -> str:
        """The decoder's ``skip_frame`` mode for a packet showing at ``pts_s``: non-reference frames are
        skipped when they show before the next sample is due, unless samples are dense (motion's 8 fps:
        every mode change is copied to each decoder thread, which costs more than the skips save)."""
        if fps * self.DENSE_FRAMES * self.frame_s > 1.0:
            return "DEFAULT"
        if pts_s is not None and pts_s < next_due - self.frame_s / 2:
            return "NONREF"
        return "DEFAULT"


class FrameSampler:
    """Turns decoded PyAV frames of one stream into samples; shared by every source.

    Video frames are sampled at ``video_fps`` in media time (only sampled frames are converted to RGB
    and scaled down to ``max_width``); audio frames are resampled to 16 kHz mono float32 and cut into
    windows by :class:`AudioWindower`. Counters go to ``stats``. Not thread-safe: one producer.
    """

    def __init__(self, stream_id: str, options: IngestOptions, stats: IngestStats) -> None:
        self.stream_id = stream_id
        self.options = options
        self.stats = stats
        #: The current video sampling rate; another thread may change it (adaptive sampling).
        self.video_fps = options.video_fps
        stats.video_fps = options.video_fps
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self._windower: AudioWindower | VadSegmenter
        if options.vad:
            self._windower = VadSegmenter(stream_id, VadOptions(max_utterance_s=2 * options.audio_window_s))
        else:
            self._windower = AudioWindower(stream_id, options.audio_window_s)
        self._next_video_ts = 0.0
        self._index = 0

    @property
    def next_video_ts(self) -> float:
        """Media time at or after which the next video frame is sampled."""
        return self._next_video_ts

    def frame(self, frame: av.VideoFrame | av.AudioFrame, media_ts: float) -> Iterator[MediaSample]:
        """Samples due after this frame (often none)."""
        if isinstance(frame, av.VideoFrame):
            self.stats.frames_decoded += 1
            if media_ts + 1e-6 >= self._next_video_ts:
                fps = self.video_fps
                self.stats.video_fps = fps
                self._next_video_ts = max(self._next_video_ts + 1.0 / fps, media_ts)
                self.stats.frames_sampled += 1
                yield VideoSample(self.stream_id, round(media_ts, 6), self._rgb(frame), self._index)
                self._index += 1
        else:
            yield from self._audio(frame, media_ts)

    def flush(self) -> Iterator[AudioChunk]:
        """End of stream: what the resampler and the windower still hold."""
        yield from self._audio(None, 0.0)
        yield from self._windower.flush()
        if isinstance(self._windower, VadSegmenter):
            self.stats.voiced_seconds = self._windower.voiced_seconds

    def _audio(self, frame: av.AudioFrame | None, media_ts: float) -> Iterator[AudioChunk]:
        try:
            out = self._resampler.resample(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            log.warning("%s: audio resampling failed: %s", self.stream_id, exc)
            self.stats.decode_errors += 1
            return
        for f in out:
            pcm = f.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            self.stats.audio_seconds += len(pcm) / AUDIO_RATE
            chunks = list(self._windower.push(media_ts, pcm))
            if isinstance(self._windower, VadSegmenter):
                self.stats.voiced_seconds = self._windower.voiced_seconds
            for chunk in chunks:
                self.stats.audio_chunks += 1
                yield chunk

    def _rgb(self, frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
        width, height = frame.width, frame.height
        if width > self.options.max_width:
            height = max(2, round(height * self.options.max_width / width / 2) * 2)
            width = self.options.max_width
        return np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height), dtype=np.uint8)


class _SkippingDecoder:
    """A :class:`DecodeSkipper` applied to one video stream, for one sampler (the decoder thread's)."""

    def __init__(
        self, video: Any, sampler: FrameSampler, media_time: Callable[[float], float | None]
    ) -> None:
        rate = video.average_rate or video.guessed_rate
        self.skipper = DecodeSkipper(1.0 / float(rate) if rate else 1.0 / 30)
        self.video = video
        self.sampler = sampler
        self.media_time = media_time
        self.mode = "DEFAULT"

    def skip(self, packet: Any) -> bool:
        """Whether not to decode ``packet``; if it is decoded, the decoder's ``skip_frame`` set for it."""
        pts = None if packet.pts is None else self.media_time(float(packet.pts * packet.time_base))
        due = self.sampler.next_video_ts
        if self.skipper.skip_packet(pts, packet.is_keyframe, due):
            return True
        mode = self.skipper.skip_frame(pts, due, self.sampler.video_fps)
        if mode != self.mode:  # only on change: each change is copied to every decoder thread
            self.video.codec_context.skip_frame = self.mode = mode
        return False


class AVSource:
    """A :class:`~livesafe.ingest.source.MediaSource` for anything FFmpeg opens: files, HTTP(S), RTMP..."""

    def __init__(self, stream_id: str, url: str, options: IngestOptions | None = None) -> None:
        self.stream_id = stream_id
        self.url = url
        self.options = options or IngestOptions()
        self.stats = IngestStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: SampleChannel | None = None
        self._sampler: FrameSampler | None = None
        self._video_fps = self.options.video_fps
        self._keyframes_only = self.options.keyframes_only

    def set_keyframes_only(self, enabled: bool) -> None:
        """Decode key frames only, or every frame (:class:`~livesafe.ingest.source.KeyframeControl`).

        Takes effect when the source opens its input (a live source: at every reconnection), so call it
        before iterating :meth:`samples`."""
        self._keyframes_only = enabled

    def set_video_fps(self, fps: float) -> None:
        """Change the video sampling rate from now on (adaptive sampling; safe from any thread)."""
        if fps <= 0:
            raise ValueError(f"video fps must be > 0, got {fps}")
        self._video_fps = fps
        if self._sampler is not None:
            self._sampler.video_fps = fps

    async def samples(self) -> AsyncIterator[MediaSample]:
        if self._thread is not None:
            raise RuntimeError("AVSource.samples() can only be iterated once")
        loop = asyncio.get_running_loop()
        opts = self.options
        channel = SampleChannel(
            loop, opts.queue_size, opts.pacing, self.stats,
            video_slots=opts.video_slots, audio_high_s=opts.audio_high_s, audio_low_s=opts.audio_low_s,
        )
        self._channel = channel
        self._thread = threading.Thread(
            target=self._run, args=(channel,), name=f"decode-{self.stream_id}", daemon=True
        )
        self._thread.start()
        try:
            while (item := await channel.get()) is not None:
                yield item
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop decoding and wait for the decoder thread (bounded)."""
        self._stop.set()
        if self._channel is not None:
            self._channel.close()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 5.0)
            if thread.is_alive():
                log.warning("decoder thread for %s did not stop within 5 s", self.stream_id)

    # -- decoder thread -------------------------------------------------------------------------------
    def _run(self, channel: SampleChannel) -> None:
        error: BaseException | None = None
        try:
            for sample in self._decode():
                channel.put(sample)
        except ChannelClosedError:
            pass
        except SourceError as exc:
            error = exc
        except Exception as exc:  # any decoder failure ends this stream only, with its cause
            error = SourceError(f"{self.url}: {type(exc).__name__}: {exc}")
        channel.finish(error)

    def _open(self) -> Any:
        try:
            return av.open(self.url, mode="r", timeout=(10.0, 10.0))
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self.url}: {exc}") from exc

    def _decode(self) -> Iterator[MediaSample]:
        container = self._open()
        try:
            streams = self._streams(container)
            if not streams:
                raise SourceError(f"{self.url}: no audio or video stream")
            origin = (container.start_time or 0) / av.time_base
            sampler = self._new_sampler()
            wall_start = time.monotonic()
            for frame, t in self._decoded(container, streams, sampler, lambda t: max(0.0, t - origin)):
                ts = max(0.0, t - origin)
                if self.options.pacing == "realtime":
                    self._pace(wall_start, ts)
                yield from sampler.frame(frame, ts)
            if self._stop.is_set():
                return
            yield from sampler.flush()
        finally:
            container.close()

    def _decoded(
        self, container: Any, streams: list[Any], sampler: FrameSampler | None = None,
        media_time: Callable[[float], float | None] | None = None,
    ) -> Iterator[tuple[av.VideoFrame | av.AudioFrame, float]]:
        """Decoded frames with their time in seconds, until the container ends or the source stops.

        With a ``sampler`` and ``media_time`` (a container time in seconds to the sampler's media time,
        None while unknown), only the video the sampler needs is decoded (:class:`DecodeSkipper`, unless
        key frames only). Isolated decode errors are counted and skipped (too many end the source)."""
        video = next((s for s in streams if s.type == "video"), None)
        skipping = None
        if (video is not None and sampler is not None and media_time is not None and self.options.skip_decode
                and not self._keyframes_only and video.codec_context.name in SKIPPABLE_CODECS):
            skipping = _SkippingDecoder(video, sampler, media_time)
        for packet in container.demux(*streams):
            if self._stop.is_set():
                return
            if skipping is not None and packet.stream is video and skipping.skip(packet):
                self.stats.packets_skipped += 1
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                self._decode_error(exc)
                continue
            for frame in frames:
                if frame.time is not None:
                    yield frame, float(frame.time)

    def _streams(self, container: Any) -> list[Any]:
        """The first video and audio streams, set up for decoding (threads, keyframe-only); may be []."""
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            video.thread_type = "AUTO"
            if self._keyframes_only:
                video.codec_context.skip_frame = "NONKEY"
        return [s for s in (video, audio) if s is not None]

    def _new_sampler(self) -> FrameSampler:
        """A sampler for a new decoding session, at the current (possibly adapted) video rate."""
        sampler = FrameSampler(self.stream_id, self.options, self.stats)
        sampler.video_fps = self._video_fps
        self._sampler = sampler
        return sampler

    def _pace(self, wall_start: float, media_ts: float) -> None:
        delay = wall_start + media_ts - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def _decode_error(self, exc: Exception) -> None:
        self.stats.decode_errors += 1
        log.warning("%s: decode error %d: %s", self.stream_id, self.stats.decode_errors, exc)
        if self.stats.decode_errors > self.options.max_decode_errors:
            raise SourceError(
                f"{self.url}: giving up after {self.stats.decode_errors} decode errors (last: {exc})"
            ) from exc
