"""The command line as a user runs it: real processes, real models where the command needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from livesafe.core.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent


def livesafe(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livesafe.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=180, check=False)


@pytest.mark.models
def test_classify_text_prints_scores_and_flags_per_line() -> None:
    lines = ["I know where you live and I will kill you", "thanks for the follow, love this community"]
    proc = livesafe("classify-text", stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["text"] for o in out] == lines
    assert out[0]["flagged"] == ["threat"] and out[0]["scores"]["threat"] >= 0.8
    assert out[1]["flagged"] == [] and max(out[1]["scores"].values()) < 0.3
    assert proc.stderr == ""


def test_policy_check(tmp_path: Path) -> None:
    ok = livesafe("policy", "check", str(ROOT / "configs" / "default.yaml"))
    assert ok.returncode == 0 and load_policy().hash in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nladder: {tiers: [{name: warn, enter: 2}]}\ncategories: {}\n")
    refused = livesafe("policy", "check", str(bad))
    assert refused.returncode == 1
    assert "ladder.tiers[0].enter" in refused.stderr and str(bad) in refused.stderr
