"""The capacity workload, made at bench time: a clip like what live encoders send, and playlists looping it.

The clip: 1280x720 30 fps H.264 (libx264 ``veryfast``, ~3 Mbit/s, a key frame every 2 s and never at a
scene cut, 3 B-frames) with 48 kHz stereo AAC carrying speech about 70 % of the time. The picture is Big
Buck Bunny's 720p excerpt from ``../shared/data`` when that is there (its 24 fps frames re-timed to 30
fps), else the bundled demo streams upscaled (synthetic, cheaper to decode than camera video: figures on it
are optimistic); the voice is espeak-ng's, else the bundled demo's (:mod:`livesafe.bench.speech`). Clips
are cached by their parameters (``~/.cache/livesafe/bench``).

:func:`playlist` writes an ``ffconcat`` list that starts the clip at a per-stream offset (a key frame) and
repeats it for as long as a run needs, so N streams neither end early nor speak in lockstep; FFmpeg's
concat demuxer plays it as one continuous stream (stream copy: nothing is re-encoded per stream).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from livesafe.bench.speech import RATE, load_speech, speech_track

ROOT = Path(__file__).resolve().parent.parent.parent
SHARED_VIDEO = ROOT.parent / "shared" / "data" / "video" / "moviepy" / "big_buck_bunny_0_30.webm"
DEMO_VIDEOS = tuple(ROOT / "livesafe" / "demo" / name for name in ("benign.mp4", "threat.mp4"))
#: Bump when the way clips are made changes, so cached clips are made again.
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    seconds: float = 90.0
    width: int = 1280
    height: int = 720
    fps: int = 30
    gop_s: float = 2.0
    bframes: int = 3
    video_kbps: int = 3000
    audio_rate: int = 48000
    audio_kbps: int = 128
    speech_fraction: float = 0.7
    #: The picture's source; None: Big Buck Bunny from ../shared when present, else the bundled demo.
    video: Path | None = None
    #: False: the bundled demo's voice even where espeak-ng is installed.
    espeak: bool = True


@dataclass(frozen=True, slots=True)
class Workload:
    path: Path
    seconds: float
    width: int
    height: int
    fps: int
    gop_s: float
    bframes: int
    speech_s: float
    video_source: str
    speech_source: str

    @property
    def speech_fraction(self) -> float:
        return self.speech_s / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        data["speech_fraction"] = round(self.speech_fraction, 3)
        data["bytes"] = self.path.stat().st_size if self.path.is_file() else None
        return data


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "livesafe" / "bench"


def video_sources(spec: WorkloadSpec) -> tuple[Path, ...]:
    if spec.video is not None:
        return (spec.video,)
    return (SHARED_VIDEO,) if SHARED_VIDEO.is_file() else DEMO_VIDEOS


def _frames(paths: tuple[Path, ...], spec: WorkloadSpec) -> Iterator[av.VideoFrame]:
    """The sources' frames at the clip's size, for ever (sources far below the clip's rate repeat each
    frame, e.g. 10 fps three times; 24 fps is simply re-timed)."""
    while True:
        for path in paths:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                rate = float(stream.average_rate or spec.fps)
                repeat = max(1, round(spec.fps / rate))
                for frame in container.decode(stream):
                    out = frame.reformat(width=spec.width, height=spec.height, format="yuv420p")
                    for _ in range(repeat):
                        yield out


def _key(spec: WorkloadSpec, sources: tuple[Path, ...], espeak: bool) -> str:
    data = {**dataclasses.asdict(spec), "video": [str(p) for p in sources], "espeak": espeak,
            "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def make_workload(spec: WorkloadSpec = WorkloadSpec(), cache_dir: Path | None = None) -> Workload:
    """The clip for ``spec``, made now or taken from the cache."""
    from livesafe.bench.speech import espeak_available

    sources = video_sources(spec)
    if missing := [str(p) for p in sources if not p.is_file()]:
        raise FileNotFoundError(f"bench video source missing: {', '.join(missing)}")
    espeak = spec.espeak and espeak_available()
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"live{spec.height}p{spec.fps}-{spec.seconds:g}s-{_key(spec, sources, espeak)}"
    path, meta = cache / f"{stem}.mp4", cache / f"{stem}.json"
    if path.is_file() and meta.is_file():
        data = json.loads(meta.read_text())
        data["path"] = path
        return Workload(**data)
    speech = load_speech(prefer_espeak=espeak)
    track, speech_s = speech_track(speech.utterances, spec.seconds, spec.speech_fraction)
    tmp = cache / f".{stem}.{os.getpid()}.mp4"
    try:
        _encode(tmp, spec, sources, track)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    workload = Workload(path, spec.seconds, spec.width, spec.height, spec.fps, spec.gop_s, spec.bframes,
                        round(speech_s, 2), ", ".join(p.name for p in sources), speech.source)
    data = {k: v for k, v in dataclasses.asdict(workload).items() if k != "path"}
    meta.write_text(json.dumps(data, indent=2) + "\n")
    return workload


def _encode(out: Path, spec: WorkloadSpec, sources: tuple[Path, ...], speech: np.ndarray[Any, Any]) -> None:
    n_frames = round(spec.seconds * spec.fps)
    gop = round(spec.gop_s * spec.fps)
    # The 16 kHz speech, upsampled to the container's rate, on both channels.
    n_audio = int(spec.seconds * spec.audio_rate)
    pcm = np.interp(np.arange(n_audio) * (RATE / spec.audio_rate), np.arange(len(speech)), speech)
    stereo = np.ascontiguousarray(np.stack([pcm, pcm]).astype(np.float32))
    with av.open(str(out), "w", format="mp4") as dst:
        video = dst.add_stream("libx264", rate=spec.fps)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.codec_context.gop_size = gop
        kbps = spec.video_kbps
        video.options = {"preset": "veryfast", "x264-params": (
            f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={spec.bframes}:"
            f"bitrate={kbps}:vbv-maxrate={kbps}:vbv-bufsize={2 * kbps}")}
        audio = dst.add_stream("aac", rate=spec.audio_rate)
        audio.layout = "stereo"
        audio.bit_rate = spec.audio_kbps * 1000
        block = 1024
        done_audio = 0
        frames = _frames(sources, spec)
        for i in range(n_frames):
            frame = next(frames)
            frame.pict_type = av.video.frame.PictureType.NONE  # the source's key frames are not forced
            frame.pts, frame.time_base = i, Fraction(1, spec.fps)
            for packet in video.encode(frame):
                dst.mux(packet)
            until = min(n_audio, math.ceil((i + 1) * spec.audio_rate / spec.fps))
            while done_audio < until:  # audio interleaved with the video, by time
                chunk = stereo[:, done_audio : done_audio + block]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
                af.sample_rate, af.pts = spec.audio_rate, done_audio
                af.time_base = Fraction(1, spec.audio_rate)
                for packet in audio.encode(af):
                    dst.mux(packet)
                done_audio += chunk.shape[1]
        for stream in (video, audio):
            for packet in stream.encode():
                dst.mux(packet)


def playlist(workload: Workload, out_dir: Path, name: str, seconds: float, offset_s: float = 0.0) -> Path:
    """An ``ffconcat`` list in ``out_dir`` playing ``workload`` from ``offset_s`` (rounded down to a key
    frame) and then from the start again, until at least ``seconds`` of media."""
    out_dir.mkdir(parents=True, exist_ok=True)
    link = out_dir / "clip.mp4"  # the concat demuxer's safe mode takes plain relative names only
    if not link.exists():
        link.symlink_to(workload.path.resolve())
    offset = (offset_s // workload.gop_s) * workload.gop_s % workload.seconds
    lines = ["ffconcat version 1.0", "file clip.mp4"]
    if offset > 0:
        lines.append(f"inpoint {offset:.3f}")
    total = workload.seconds - offset
    while total < seconds:
        lines.append("file clip.mp4")
        total += workload.seconds
    path = out_dir / f"{name}.ffconcat"
    path.write_text("\n".join(lines) + "\n")
    return path
