"""PDQ known-bad matching with the real ``pdqhash`` on real and generated images (no mocks)."""

from __future__ import annotations

import io
import itertools
import os
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from livesafe.analyzers.base import VisionAnalyzer
from livesafe.analyzers.hashmatch import (
    HashList,
    HashListError,
    HashMatcher,
    hamming_distance,
    pdq_hash,
)
from livesafe.core.events import VideoSample

DATA = Path(__file__).resolve().parent / "data" / "hashlists"
#: PDQ of skimage's astronaut.png, as listed in the fixture lists.
ASTRONAUT = "2d6b1af3a956c529e79ca3d2526fa834d4196c81cedd04de0a26b855fc99b724"

Image8 = npt.NDArray[np.uint8]


def generated(seed: int, size: tuple[int, int] = (640, 480)) -> Image8:
    """A textured RGB image: random 64x48 blocks upscaled bicubically (PDQ quality 100)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def resized(image: Image8, size: tuple[int, int]) -> Image8:
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def jpeg(image: Image8, quality: int = 60) -> Image8:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def sample(image: Image8, ts: float = 1.5, index: int = 3) -> VideoSample:
    return VideoSample(stream_id="s1", media_ts=ts, image=image, index=index)


def write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bump_mtime(path: Path) -> None:
    """Make a rewrite visible even on file systems with coarse timestamps."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


# --- hashing ---------------------------------------------------------------------------------------


def test_pdq_hash_is_hex_and_stable_under_resize_and_jpeg() -> None:
    image = generated(1)
    digest, quality = pdq_hash(image)
    assert len(digest) == 64 and int(digest, 16) >= 0 and digest == digest.lower()
    assert quality >= 90
    assert pdq_hash(image) == (digest, quality)
    assert hamming_distance(digest, pdq_hash(resized(image, (500, 375)))[0]) <= 31
    assert hamming_distance(digest, pdq_hash(jpeg(image))[0]) <= 31
    assert hamming_distance(digest, pdq_hash(generated(2))[0]) > 64


def test_hamming_distance() -> None:
    assert hamming_distance("0" * 64, "0" * 64) == 0
    assert hamming_distance("0" * 64, "f" * 64) == 256
    assert hamming_distance("0" * 63 + "3", "0" * 64) == 2


# --- list formats ----------------------------------------------------------------------------------


def test_plain_text_list_with_labels_and_comments() -> None:
    hl = HashList(DATA / "te_plain.txt", category="sexual")
    assert hl.name == "te_plain" and hl.category == "sexual"
    assert hl.hashes == (
        ASTRONAUT,
        "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
        "0" * 64,
    )
    assert hl.labels == ("astronaut-1", "te_plain:4", "zeros")
    assert hl.packed.shape == (3, 4) and not hl.packed.flags.writeable


def test_hma_csv_export_reads_columns_by_name_and_keeps_pdq_rows() -> None:
    hl = HashList(DATA / "hma_export.csv", category="violence", name="bank")
    assert hl.name == "bank"
    assert hl.hashes == (ASTRONAUT, "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22")
    assert hl.labels == ("101", "103")


def test_csv_is_sniffed_without_extension_and_column_order_is_free(tmp_path: Path) -> None:
    path = write_list(
        tmp_path / "export.txt",
        [
            "# exported by a ThreatExchange tool",
            '"id","hash","signal_type"',
            f'"a1","{ASTRONAUT.upper()}","pdq"',
            '"a2","0cc175b9c0f1b6a831c399e269772661","md5"',
        ],
    )
    hl = HashList(path, category="hate")
    assert hl.hashes == (ASTRONAUT,) and hl.labels == ("a1",)


def test_lone_pdq_header_is_sniffed_as_csv(tmp_path: Path) -> None:
    hl = HashList(write_list(tmp_path / "one.lst", ["PDQ", ASTRONAUT]), category="scam")
    assert hl.hashes == (ASTRONAUT,) and hl.labels == ("one:2",)


def test_pdq_column_needs_no_type_column(tmp_path: Path) -> None:
    path = write_list(tmp_path / "l.csv", ["pdq,note", f"{ASTRONAUT},x", "", f"{'1' * 64},"])
    hl = HashList(path, category="hate")
    assert hl.hashes == (ASTRONAUT, "1" * 64)
    assert hl.labels == ("l:2", "l:4")  # no id column: file stem and line


def test_csv_without_pdq_column_is_refused_naming_the_file() -> None:
    path = DATA / "no_pdq_column.csv"
    with pytest.raises(HashListError, match=r"no_pdq_column\.csv.*no PDQ hash column"):
        HashList(path, category="nudity")


def test_bad_hash_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = write_list(tmp_path / "bad.txt", [ASTRONAUT, "# ok", "abc123,short"])
    with pytest.raises(HashListError, match=r"bad\.txt:3: not a PDQ hash"):
        HashList(path, category="nudity")
    csv_path = write_list(tmp_path / "bad.csv", ["signal_type,signal_value", "pdq,xyz"])
    with pytest.raises(HashListError, match=r"bad\.csv:2: not a PDQ hash"):
        HashList(csv_path, category="nudity")


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(HashListError, match=r"nope\.txt"):
        HashList(tmp_path / "nope.txt", category="nudity")


def test_empty_list_is_allowed_and_never_matches(tmp_path: Path) -> None:
    hl = HashList(write_list(tmp_path / "empty.txt", ["# nothing yet"]), category="nudity")
    assert len(hl) == 0
    assert HashMatcher([hl]).analyze(sample(generated(1))) == []


@pytest.mark.parametrize("category", ["known_bad", "", "Nudity"])
def test_category_must_be_a_livesafe_category(category: str) -> None:
    with pytest.raises(ValueError, match="unknown category"):
        HashList(DATA / "te_plain.txt", category=category)


def test_format_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        HashList(DATA / "te_plain.txt", category="nudity", format="json")
    with pytest.raises(HashListError, match="no PDQ hash column"):
        HashList(DATA / "te_plain.txt", category="nudity", format="csv")


# --- matching --------------------------------------------------------------------------------------


@pytest.fixture
def image() -> Image8:
    return generated(7)


@pytest.fixture
def matcher(tmp_path: Path, image: Image8) -> HashMatcher:
    digest, _ = pdq_hash(image)
    path = write_list(tmp_path / "bad.txt", ["# test list", f"{'0' * 64},zeros", f"{digest},item-42"])
    return HashMatcher([HashList(path, category="sexual", name="ncii")])


def test_matcher_is_a_vision_analyzer(matcher: HashMatcher) -> None:
    assert isinstance(matcher, VisionAnalyzer)
    assert matcher.name == "vision.pdq"
    assert matcher.categories == ("sexual",)
    assert matcher.cost.per_call_s > 0


def test_same_image_matches_exactly(matcher: HashMatcher, image: Image8) -> None:
    [signal] = matcher.analyze(sample(image))
    assert signal.category == "sexual" and signal.analyzer == "vision.pdq"
    assert signal.stream_id == "s1" and signal.media_ts == 1.5 and signal.end_ts == 1.5
    assert signal.score == 1.0
    ev = signal.evidence
    assert ev["list"] == "ncii" and ev["match_id"] == "item-42" and ev["distance"] == 0
    assert ev["quality"] >= 50 and ev["frame"] == 3 and ev["pdq"] == pdq_hash(image)[0]


@pytest.mark.parametrize("variant", ["resized", "jpeg", "resized_jpeg"])
def test_near_duplicates_match(matcher: HashMatcher, image: Image8, variant: str) -> None:
    if variant == "resized":
        other = resized(image, (512, 384))
    elif variant == "jpeg":
        other = jpeg(image, quality=50)
    else:
        other = jpeg(resized(image, (800, 600)), quality=70)
    [signal] = matcher.analyze(sample(other))
    distance = signal.evidence["distance"]
    assert 0 <= distance <= 31
    assert signal.score == pytest.approx(1.0 - 0.5 * distance / 32)
    assert 0.5 < signal.score <= 1.0


def test_different_image_does_not_match(matcher: HashMatcher) -> None:
    assert matcher.analyze(sample(generated(8))) == []
    assert matcher.match(generated(8))[0] == []


def test_low_quality_frame_is_skipped(tmp_path: Path) -> None:
    flat = np.full((240, 320, 3), 128, dtype=np.uint8)
    digest, quality = pdq_hash(flat)
    assert quality < 50
    hl = HashList(write_list(tmp_path / "flat.txt", [f"{digest},flat"]), category="nudity")
    assert HashMatcher([hl]).analyze(sample(flat)) == []
    # the same list matches when the quality floor is lowered: it was the floor that skipped it
    [signal] = HashMatcher([hl], min_quality=0).analyze(sample(flat))
    assert signal.evidence["distance"] == 0 and signal.evidence["quality"] == quality


def test_score_is_monotone_in_distance(matcher: HashMatcher) -> None:
    scores = [matcher.score(d) for d in range(matcher.max_distance + 1)]
    assert scores[0] == 1.0 and all(a > b for a, b in itertools.pairwise(scores))
    assert scores[-1] > 0.5


def test_max_distance_bounds_matches(tmp_path: Path, image: Image8) -> None:
    other = jpeg(resized(image, (320, 240)), quality=30)
    d = hamming_distance(pdq_hash(image)[0], pdq_hash(other)[0])
    assert d > 0
    path = write_list(tmp_path / "l.txt", [pdq_hash(image)[0]])
    assert HashMatcher([HashList(path, category="nudity")], max_distance=d).analyze(sample(other))
    assert not HashMatcher([HashList(path, category="nudity")], max_distance=d - 1).analyze(sample(other))


def test_one_signal_per_category_nearest_wins(tmp_path: Path, image: Image8) -> None:
    digest, _ = pdq_hash(image)
    near = f"{int(digest, 16) ^ 0b111:064x}"  # 3 bits away
    a = HashList(write_list(tmp_path / "a.txt", [f"{near},near"]), category="violence")
    b = HashList(write_list(tmp_path / "b.txt", [f"{digest},exact"]), category="violence")
    c = HashList(write_list(tmp_path / "c.txt", [f"{near},other"]), category="hate")
    matcher = HashMatcher([a, b, c])
    assert matcher.categories == ("hate", "violence")
    signals = {s.category: s for s in matcher.analyze(sample(image))}
    assert set(signals) == {"hate", "violence"}
    assert signals["violence"].evidence["match_id"] == "exact"
    assert signals["violence"].evidence["list"] == "b"
    assert signals["hate"].evidence["distance"] == 3


def test_matcher_arguments(tmp_path: Path) -> None:
    hl = HashList(DATA / "te_plain.txt", category="nudity")
    with pytest.raises(ValueError, match="at least one"):
        HashMatcher([])
    with pytest.raises(ValueError, match="max_distance"):
        HashMatcher([hl], max_distance=256)
    with pytest.raises(ValueError, match="min_quality"):
        HashMatcher([hl], min_quality=101)
    with pytest.raises(ValueError, match="unique"):
        HashMatcher([hl, HashList(DATA / "te_plain.txt", category="hate")])


def test_invalid_frame_is_refused(matcher: HashMatcher) -> None:
    with pytest.raises(ValueError, match="uint8"):
        matcher.analyze(sample(np.zeros((64, 64, 3), dtype=np.float32)))


# --- reload ----------------------------------------------------------------------------------------


def test_reload_picks_up_changed_files_only(tmp_path: Path, image: Image8) -> None:
    digest, _ = pdq_hash(image)
    changing = write_list(tmp_path / "changing.txt", ["0" * 64])
    fixed = write_list(tmp_path / "fixed.txt", ["1" * 64])
    matcher = HashMatcher([HashList(changing, category="nudity"), HashList(fixed, category="nudity")])
    fixed_list = matcher.lists[1]
    assert matcher.analyze(sample(image)) == []
    assert matcher.reload() == []

    write_list(changing, ["0" * 64, f"{digest},added-later"])
    bump_mtime(changing)
    assert matcher.reload() == ["changing"]
    assert matcher.lists[1] is fixed_list and len(matcher) == 3
    [signal] = matcher.analyze(sample(image))
    assert signal.evidence["match_id"] == "added-later"

    write_list(changing, ["0" * 64])  # removed again
    bump_mtime(changing)
    assert matcher.reload() == ["changing"]
    assert matcher.analyze(sample(image)) == []


def test_reload_of_a_broken_file_keeps_the_index(tmp_path: Path, image: Image8) -> None:
    digest, _ = pdq_hash(image)
    path = write_list(tmp_path / "l.txt", [f"{digest},x"])
    matcher = HashMatcher([HashList(path, category="nudity")])
    write_list(path, ["not a hash"])
    bump_mtime(path)
    with pytest.raises(HashListError, match=r"l\.txt:1: not a PDQ hash"):
        matcher.reload()
    assert len(matcher.analyze(sample(image))) == 1
    path.unlink()
    with pytest.raises(HashListError, match=r"l\.txt"):
        matcher.reload()
    assert len(matcher.analyze(sample(image))) == 1


def test_reload_while_analyzing_in_threads(tmp_path: Path, image: Image8) -> None:
    digest, _ = pdq_hash(image)
    small = resized(image, (160, 120))  # cheaper to hash; still a near duplicate
    path = write_list(tmp_path / "l.txt", [f"{digest},v0"])
    matcher = HashMatcher([HashList(path, category="nudity")])
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while not stop.is_set():
                [signal] = matcher.analyze(sample(small))  # every generation lists the image
                seen.add(str(signal.evidence["match_id"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for version in range(1, 21):
            filler = [f"{i:064x}" for i in range(version * 50)]
            write_list(path, [*filler, f"{digest},v{version}"])
            bump_mtime(path)
            assert matcher.reload() == ["l"]
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert "v20" in {str(s.evidence["match_id"]) for s in matcher.analyze(sample(small))}
    assert seen <= {f"v{v}" for v in range(21)}


# --- shared data -----------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_skimage_photo_matches_fixture_lists(shared_data: Path) -> None:
    folder = shared_data / "images" / "skimage"
    with Image.open(folder / "astronaut.png") as im:
        astronaut = np.asarray(im.convert("RGB"), dtype=np.uint8)
    assert hamming_distance(pdq_hash(astronaut)[0], ASTRONAUT) <= 2  # the listed hash is this image's
    matcher = HashMatcher(
        [
            HashList(DATA / "te_plain.txt", category="sexual"),
            HashList(DATA / "hma_export.csv", category="violence"),
        ]
    )
    for variant in (astronaut, resized(astronaut, (400, 400)), jpeg(astronaut, quality=60)):
        signals = {s.category: s for s in matcher.analyze(sample(variant))}
        assert set(signals) == {"sexual", "violence"}
        assert signals["sexual"].evidence["match_id"] == "astronaut-1"
        assert signals["violence"].evidence["match_id"] == "101"
        assert all(int(s.evidence["distance"]) <= 31 for s in signals.values())
    for other in ("camera.png", "chelsea.png", "coffee.png", "horse.png"):
        with Image.open(folder / other) as im:
            assert matcher.analyze(sample(np.asarray(im.convert("RGB"), dtype=np.uint8))) == [], other
