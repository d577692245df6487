"""``livesafe eval``: the data set registry, the metrics and WER, and short runs on the shared data."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from livesafe.core.policy import Policy, load_policy
from livesafe.eval import main
from livesafe.eval.cli import format_table
from livesafe.eval.datasets import (
    DataNotFoundError,
    TextSet,
    cssrs_split,
    davidson_split,
    ethos_split,
    ethos_violence_dev,
    ethos_violence_split,
    load_functional,
    load_speech_refs,
    read_davidson,
    read_ethos_violence,
)
from livesafe.eval.metrics import (
    binary_metrics,
    calibration_metrics,
    expected_calibration_error,
    normalize_words,
    wer,
)
from livesafe.eval.registry import DATASETS
from livesafe.eval.runner import eval_speech, eval_text, run_eval

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def test_registry() -> None:
    assert set(DATASETS) == {
        "davidson", "ethos_binary", "ethos_violence", "cssrs", "jigsaw_sample", "functional", "heldout_suite",
        "speech_refs", "multilingual_speech", "fight_clips"}
    assert {d.kind for d in DATASETS.values()} == {"text", "speech", "video"}
    assert DATASETS["speech_refs"].kind == "speech"
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["davidson"].name = "x"  # type: ignore[misc]


def test_metrics_and_wer() -> None:
    m = binary_metrics([1, 1, 0, 0, 0], [True, False, True, False, False])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"], m["support"]) == (0.5, 0.5, 0.5, 0.6, 2)
    assert binary_metrics([0, 0], [False, False])["f1"] == 0.0
    assert normalize_words("Ask not, what YOUR country's — can do!") == [
        "ask", "not", "what", "your", "countrys", "can", "do",
    ]  # fmt: skip
    assert wer("the cat sat", "The cat, sat.") == 0.0
    assert wer("the cat sat", "the dog sat") == pytest.approx(1 / 3)
    assert wer("a b", "") == 1.0


def test_calibration_metrics() -> None:
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0
    assert expected_calibration_error([0, 0], [0.95, 0.95]) == pytest.approx(0.95)
    # Two bins: 0.15 against 1 positive in 2 (gap 0.35) and 0.85 against 2 in 2 (gap 0.15).
    assert expected_calibration_error([0, 1, 1, 1], [0.15, 0.15, 0.85, 0.85]) == pytest.approx(0.25)
    assert expected_calibration_error([], []) == 0.0
    m = calibration_metrics([1, 0, 1, 0], [0.95, 0.92, 0.6, 0.1])
    assert (m["precision_at_0.9"], m["n_at_0.9"], m["precision_at_0.5"], m["n_at_0.5"]) == (0.5, 2, 0.6667, 3)
    none = calibration_metrics([1], [0.2])
    assert none["precision_at_0.9"] is None and none["n_at_0.9"] == 0


def test_missing_data_dir(tmp_path: Path, policy: Policy, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError, match="nowhere"):
        run_eval(["jigsaw_sample"], missing, policy, limit=1)
    assert main(["--data", str(missing), "--dataset", "jigsaw_sample"]) == 2
    assert str(missing) in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--data", str(tmp_path / "empty"), "--dataset", "ethos_binary"]) == 2
    assert "Ethos_Dataset_Binary.csv" in capsys.readouterr().err


@pytest.mark.shared_data
def test_held_out_splits_match_the_training_script(shared_data: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "train_text_heads", ROOT / "scripts" / "train_text_heads.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    sys.modules[spec.name] = script  # dataclasses look their module up there
    try:
        spec.loader.exec_module(script)
    finally:
        sys.modules.pop(spec.name, None)
        sys.path[:] = path  # the script puts the repository first on sys.path
    splits: Any = script.Splits.load(shared_data)
    assert davidson_split(shared_data) == (splits.d_test, splits.c_test)
    users, labels = cssrs_split(shared_data)
    assert users == [splits.users[u] for u in splits.u_test]
    assert labels == [splits.labels[u] for u in splits.u_test]
    assert len(users) == 100
    assert ethos_split(shared_data) == (splits.e_test, splits.y_test)
    # Training, calibration and evaluation never share an item.
    u_train, u_cal, u_test = set(splits.u_train), set(splits.u_cal), set(splits.u_test)
    assert not u_train & u_cal and not u_train & u_test and not u_cal & u_test
    assert len(u_train) + len(u_cal) + len(u_test) == len(splits.users)
    train, cal, test = set(splits.e_train), set(splits.e_cal), set(splits.e_test)
    assert not train & test and not cal & test and not train & cal
    assert len(train) + len(cal) + len(test) == 998
    # Davidson repeats some tweets word for word, so its parts are checked by size: a partition.
    parts = (splits.d_train, splits.d_cal, splits.d_test)
    assert sum(map(len, parts)) == len(read_davidson(shared_data)[0])


@pytest.mark.models
@pytest.mark.shared_data
def test_text_datasets_with_limit(shared_data: Path, policy: Policy) -> None:
    result = run_eval(["jigsaw_sample", "ethos_binary"], shared_data, policy, limit=40)
    assert set(result["datasets"]) == {"jigsaw_sample", "ethos_binary"}
    jigsaw = DATASETS["jigsaw_sample"].loader(shared_data)
    ethos = DATASETS["ethos_binary"].loader(shared_data)
    assert not isinstance(jigsaw, list) and not isinstance(ethos, list)
    assert len(jigsaw) == 26  # the labelled rows of test.csv, all kept (fewer than the limit)
    assert result["datasets"]["jigsaw_sample"]["n"] == 26
    assert set(result["datasets"]["jigsaw_sample"]["categories"]) == {
        "threat",
        "harassment",
        "profanity",
        "hate",
    }
    for cat, m in result["datasets"]["jigsaw_sample"]["categories"].items():
        assert m["support"] == sum(jigsaw.labels[cat])
    ethos_hate = result["datasets"]["ethos_binary"]["categories"]["hate"]
    assert ethos_hate["n"] == 40 and 0 < ethos_hate["support"] < 40  # a sample, not the (sorted) head
    for ds in result["datasets"].values():
        assert ds["kind"] == "text"
        for cat, m in ds["categories"].items():
            assert m["floor"] == policy.categories[cat].floor
            assert m["n"] == ds["n"] and m["tp"] + m["fn"] == m["support"]
            for key in ("precision", "recall", "f1", "accuracy", "ece"):
                assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0
            for t in (0.9, 0.5):
                assert m[f"precision_at_{t}"] is None or 0.0 <= m[f"precision_at_{t}"] <= 1.0
                assert 0 <= m[f"n_at_{t}"] <= m["n"]
    table = format_table(result)
    assert "p@0.9 (n)" in table and "ece" in table


def test_functional_set_is_shipped_and_tagged(tmp_path: Path) -> None:
    data = load_functional(tmp_path)  # shipped with the package: the data directory is not read
    assert 150 <= len(data) <= 400
    assert data.tags is not None and len(data.tags) == len(data)
    assert set(data.labels) == {"hate", "threat"}
    tags = set(data.tags)
    assert {"derogation", "dehumanisation", "implicit", "threat_group", "slur", "gaming_trash_talk",
            "counter_speech", "quoting_reporting", "victim_report", "identity_neutral", "identity_positive",
            "reclaimed_self_reference", "profanity_untargeted", "negated_hate"} <= tags  # fmt: skip
    texts = [item[0] for item in data.items]
    assert len(set(texts)) == len(texts)
    for tag in ("gaming_trash_talk", "counter_speech", "negated_hate"):
        assert not any(y for y, t in zip(data.labels["hate"], data.tags, strict=True) if t == tag)
    assert all(y for y, t in zip(data.labels["threat"], data.tags, strict=True) if t == "threat_group")
    sub = data.subset([0, len(data) - 1])
    assert sub.tags == [data.tags[0], data.tags[-1]]


@pytest.mark.models
def test_functional_eval_reports_accuracy_per_tag(policy: Policy) -> None:
    from livesafe.analyzers.text import TextClassifier

    data = load_functional(ROOT)
    assert data.tags is not None
    keep = [data.tags.index(t) for t in dict.fromkeys(data.tags)]  # the first case of every tag
    result = eval_text(data.subset(keep), policy, TextClassifier())
    assert list(result["tags"]) == list(dict.fromkeys(data.tags))
    for t in result["tags"].values():
        assert t["n"] == 1 and t["accuracy"] in (0.0, 1.0)
        assert t["accuracy"] == min(t["hate"], t["threat"])
    table = format_table({"policy": "p", "data_dir": "d", "limit": None, "datasets": {"functional": result}})
    assert "accuracy per functionality" in table and "gaming_trash_talk" in table


@pytest.mark.models
@pytest.mark.shared_data
def test_speech_wer_on_two_clips(shared_data: Path) -> None:
    from livesafe.analyzers.speech import SpeechOptions, load_recognizer

    refs = load_speech_refs(shared_data)
    assert refs and all(c.quality.startswith(("good", "medium")) for c in refs)
    assert not any(c.path == "faster_whisper/multilingual.mp3" for c in refs)
    clips = [
        next(c for c in refs if c.path == "whisper/jfk.flac"),
        next(c for c in refs if c.path == "faster_whisper/stereo_diarization.wav" and c.channel == 1),
    ]
    result = eval_speech(clips, shared_data, load_recognizer(SpeechOptions()))
    assert result["n"] == 2
    for clip in result["clips"]:
        assert isinstance(clip["wer"], float) and 0.0 <= clip["wer"] <= 1.0
    assert result["clips"][0]["wer"] == 0.0, result["clips"][0]["hypothesis"]
    assert "horizon" in result["clips"][1]["hypothesis"].lower()  # channel 1, not the mix or channel 0
    assert isinstance(result["wer"], float) and 0.0 <= result["wer"] <= 1.0


def test_ethos_violence_is_the_held_out_half(shared_data: Path) -> None:
    texts, _ = read_ethos_violence(shared_data)
    held_texts, held_labels = ethos_violence_split(shared_data)
    dev_texts, dev_labels = ethos_violence_dev(shared_data)
    assert ethos_violence_split(shared_data) == (held_texts, held_labels)  # fixed: seed 0
    assert sorted(held_texts + dev_texts) == sorted(texts)  # a partition of every comment
    assert abs(len(held_texts) - len(dev_texts)) <= 1
    assert abs(sum(held_labels) - sum(dev_labels)) <= 1  # stratified on violence
    loaded = DATASETS["ethos_violence"].loader(shared_data)
    assert isinstance(loaded, TextSet)
    assert [t for [t] in loaded.items] == held_texts and loaded.labels == {"threat": held_labels}
