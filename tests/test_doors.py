"""The doors: stream ids, session ids and sources are checked before anything is built from them (pure
checks, fuzzed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st

from livesafe.core.ids import STREAM_ID_PATTERN, check_stream_id, session_problem, stream_id_problem
from livesafe.ingest.opener import SourceRules
from livesafe.timeline.sessions import new_session_id
from livesafe.timeline.store import TimelineStore


@pytest.mark.parametrize(("value", "reason"), [
    ("", "must not be empty"), ("../../x", "is not allowed"), ("a/b", "is not allowed"),
    (".hidden", "is not allowed"), ("x" * 5000, "is 5000 characters long"), ("{tag}", "is not allowed"),
    ("chan 42", "is not allowed"), (42, "must be a string"), ("a\nb", "is not allowed"),
])
def test_bad_stream_ids_are_refused_with_the_reason(value: object, reason: str) -> None:
    problem = stream_id_problem(value)
    assert problem is not None and reason in problem and len(problem) < 200
    with pytest.raises(ValueError, match="stream_id"):
        check_stream_id(value)


@given(st.text(max_size=300))
def test_stream_id_check_never_fails_and_accepts_only_the_documented_form(value: str) -> None:
    problem = stream_id_problem(value)
    assert (problem is None) == bool(STREAM_ID_PATTERN.fullmatch(value))
    if problem is None:
        assert "/" not in value and len(value) <= 128 and not value.startswith(".")


@given(st.text(alphabet="abcAB09._:-", min_size=1, max_size=128).filter(lambda s: s[0].isalnum()))
def test_valid_ids_make_keys_of_their_own(value: str) -> None:
    store = TimelineStore(redis.asyncio.Redis(), prefix="p")  # keys only; never connects
    key = store.timeline_key(value, new_session_id())
    assert key.startswith(f"p:s:{{{value}}}:tl:")


def test_session_ids_are_checked() -> None:
    assert session_problem(new_session_id()) is None
    assert session_problem("../x") is not None


def test_sources_a_backend_may_name(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.mp4").write_bytes(b"x")
    (media / "escape.mp4").symlink_to("/etc/hostname")
    rules = SourceRules(dirs=(media,))
    assert rules.problem(str(media / "a.mp4")) is None
    assert rules.problem(f"file://{media / 'a.mp4'}") is None
    assert rules.problem("rtmp://host/live/key") is None and rules.problem("whep://t@h/x") is None
    for bad, reason in (("/etc/shadow", "not under a configured source directory"),
                        (str(media / ".." / ".." / "etc" / "passwd"), "not under"),
                        (str(media / "escape.mp4"), "not under"),
                        ("file:///etc/shadow", "not under"),
                        ("gopher://h/x", "scheme 'gopher' is not allowed"),
                        ("a\x00b", "control characters"),
                        ("rtmp://h/" + "x" * 5000, "at most 4096")):
        problem = rules.problem(bad)
        assert problem is not None and reason in problem, (bad, problem)
    none = SourceRules()
    assert "none is configured" in (none.problem("/tmp/a.mp4") or "")




@given(st.text(max_size=200) | st.from_regex(r"(file|rtmp|gopher|http)://[\x00-\x7f]{0,60}", fullmatch=True))
def test_source_rules_never_fail_and_only_allow_what_they_say(source: str) -> None:
    rules = SourceRules(dirs=(Path("/srv/media"),))
    problem = rules.problem(source)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        scheme = source.split("://", 1)[0].lower() if "://" in source else ""
        resolved = os.path.realpath(source.removeprefix("file://")) if scheme in ("", "file") else ""
        assert scheme in rules.schemes or resolved.startswith("/srv/media")
