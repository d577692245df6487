"""Policy loading: the default loads; every mistake is refused with file, key path and reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from livesafe.core.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent


def default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    return data


def test_default_policy_loads_with_all_required_categories() -> None:
    policy = load_policy()
    required = {"nudity", "violence", "weapons", "self_harm", "hate", "harassment", "threat",
                "sexual_solicitation", "scam", "profanity"}
    assert required <= set(policy.categories)
    assert [t.kind for t in policy.ladder.tiers] == ["observe", "warn", "restrict", "cut"]
    assert policy.name == "default"
    assert len(policy.hash) == 16


def test_configs_dir_is_the_packaged_one() -> None:
    assert DEFAULT_POLICY_PATH.read_bytes() == (ROOT / "configs" / "default.yaml").read_bytes()


def test_hash_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    data = default_data()
    p1 = tmp_path / "a.yaml"
    p1.write_text("# a comment\n" + yaml.safe_dump(data, default_flow_style=True))
    assert load_policy(p1).hash == load_policy().hash
    data["categories"]["threat"]["weight"] = 2.0
    assert parse_policy(data).hash != load_policy().hash


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (lambda d: d["categories"]["threat"].update(weight="high"), "categories.threat.weight",
         "must be a number"),
        (lambda d: d["categories"]["threat"].update(treshold=0.5), "categories.threat.treshold",
         "unknown key"),
        (lambda d: d["categories"].update(spam_bots={}), "categories.spam_bots", "unknown key"),
        (lambda d: d["ladder"]["tiers"][1].update(exit=0.9), "ladder.tiers[1].exit", "must be below enter"),
        (lambda d: d["ladder"]["tiers"][2].update(enter=0.1), "ladder.tiers", "must rise up the ladder"),
        (lambda d: d["ladder"]["tiers"][0].update(effects=["explode"]), "ladder.tiers[0].effects",
         "unknown 'explode'"),
        (lambda d: d["categories"]["hate"].update(max_tier="ban"), "categories.hate.max_tier",
         "must be one of"),
        (lambda d: d["analyzers"]["speech"].update(backend="vosk"), "analyzers.speech.backend",
         "must be one of"),
        (lambda d: d.pop("name"), "name", "is required"),
        (lambda d: d["sampling"].update(video_fps=0), "sampling.video_fps", "must be in (0.0"),
        (lambda d: d["categories"]["nudity"].update(half_life_s=-1), "categories.nudity.half_life_s",
         "must be in"),
    ],
)
def test_invalid_policy_names_file_key_and_reason(
    tmp_path: Path, mutate: Any, path: str, reason: str
) -> None:
    data = default_data()
    mutate(data)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as err:
        load_policy(f)
    assert any(p == path and reason in r for p, r in err.value.problems), err.value.problems
    assert str(f) in str(err.value)


def test_all_problems_reported_at_once() -> None:
    data = default_data()
    data["categories"]["threat"]["weight"] = -1
    data["categories"]["hate"]["floor"] = 2
    with pytest.raises(PolicyError) as err:
        parse_policy(data, "x.yaml")
    assert {p for p, _ in err.value.problems} == {"categories.threat.weight", "categories.hate.floor"}


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read file"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncategories: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML") as err:
        load_policy(bad)
    assert "line" in err.value.problems[0][0]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(PolicyError, match="empty"):
        load_policy(empty)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="must be a mapping"):
        load_policy(listy)


def test_category_overrides() -> None:
    policy = load_policy()
    restrict = policy.ladder.index("restrict")
    assert policy.enter_threshold("self_harm", restrict) == 0.6
    assert policy.exit_threshold("self_harm", restrict) < 0.6
    assert policy.effects_for("nudity", restrict) == ("blur", "age_gate")
    assert policy.max_tier_index("profanity") == restrict


def test_hash_lists_resolve_relative_to_the_policy_and_must_exist(tmp_path: Path) -> None:
    import shutil

    lists = tmp_path / "lists"
    lists.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "hashlists" / "te_plain.txt", lists / "bad.txt")
    data = default_data()
    data["analyzers"]["hash_lists"] = [{"path": "lists/bad.txt", "category": "sexual", "name": "te"}]
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(data))
    policy = load_policy(f)
    (entry,) = policy.analyzers.hash_lists
    assert entry.path == str(lists / "bad.txt") and entry.category == "sexual"
    from livesafe.analyzers.registry import load_analyzers

    no_speech = dataclasses.replace(policy.analyzers.speech, enabled=False)
    only_hashes = dataclasses.replace(
        policy.analyzers, nudity=False, motion=False, text=False, speech=no_speech
    )
    vision, _, _ = load_analyzers(dataclasses.replace(policy, analyzers=only_hashes))
    assert [a.name for a in vision] == ["vision.pdq"]
    data["analyzers"]["hash_lists"] = [{"path": "lists/missing.txt", "category": "sexual"}]
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as err:
        load_policy(f)
    assert err.value.problems[0][0] == "analyzers.hash_lists[0].path"
    data["analyzers"]["hash_lists"] = [{"path": "lists/bad.txt", "category": "csam"}]
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError, match="must be one of"):
        load_policy(f)


