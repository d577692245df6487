"""``livesafe eval``: measure the text classifier, speech recognition (and translation) and the motion
analyzer on the shared data sets, and print the figures.

    python -m livesafe.eval [--data DIR] [--dataset NAME ...] [--limit N] [--json] [--policy FILE]

Reads ``../shared/data`` beside the checkout (or ``$LIVESAFE_SHARED_DATA``, or ``--data``); see its
``MANIFEST.md``. The data sets are listed in :mod:`livesafe.eval.registry`, what is measured in
:mod:`livesafe.eval.runner`. ``--limit N`` keeps, per data set, a deterministic sample of N items (seed 0,
in data order), for quick runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from livesafe.core.policy import PolicyError, load_policy
from livesafe.eval.datasets import DataNotFoundError
from livesafe.eval.registry import DATASETS
from livesafe.eval.runner import default_data_dir, run_eval

__all__ = ["format_table", "main"]


def format_table(result: dict[str, Any]) -> str:
    """The figures of :func:`run_eval` as plain-text tables."""
    lines = [f"policy {result['policy']}, data {result['data_dir']}, limit {result['limit']}"]
    text = {k: v for k, v in result["datasets"].items() if v["kind"] in ("text", "video")}
    if any(ds["categories"] for ds in text.values()):
        lines += [
            "",
            f"{'dataset':<15} {'category':<11} {'floor':>5} {'n':>6} {'support':>7} "
            f"{'precision':>9} {'recall':>6} {'f1':>6} {'accuracy':>8} "
            f"{'p@0.9 (n)':>12} {'p@0.5 (n)':>12} {'ece':>6}",
        ]

        def at(m: dict[str, Any], t: float) -> str:
            p = m.get(f"precision_at_{t}")
            return f"{'-' if p is None else f'{p:.3f}':>5} ({m.get(f'n_at_{t}', 0)})"

        for name, ds in text.items():
            for cat, m in ds["categories"].items():
                lines.append(
                    f"{name:<15} {cat:<11} {m['floor']:>5.2f} {m['n']:>6} {m['support']:>7} "
                    f"{m['precision']:>9.3f} {m['recall']:>6.3f} {m['f1']:>6.3f} {m['accuracy']:>8.3f} "
                    f"{at(m, 0.9):>12} {at(m, 0.5):>12} {m['ece']:>6.3f}"
                )
    for name, ds in text.items():
        for label, m in ds.get("any_of", {}).items():  # flagged when any of its categories is flagged
            rule = " or ".join(f"{c} >= {f:.2f}" for c, f in m["floors"].items())
            lines += [
                "",
                f"{name}: {label} = {rule} (flagged at the policy floor)",
                f"  overall accuracy {m['accuracy']:.3f} (n {m['n']}); {label} part "
                f"{m['accuracy_positive']:.3f} (n {m['n_positive']}); not {label} part "
                f"{m['accuracy_negative']:.3f} (n {m['n_negative']})",
                f"  precision {m['precision']:.3f}, recall {m['recall']:.3f}, f1 {m['f1']:.3f}; flagged by "
                + ", ".join(f"{c} {k}" for c, k in m["flagged_by"].items()),
            ]
    for name, ds in text.items():
        if not ds.get("tags"):
            continue
        cats = [*ds["categories"], *ds.get("any_of", {})]
        lines += ["", f"{name}: accuracy per functionality (right in every category; per category)"]
        lines.append(f"  {'tag':<26} {'n':>4} {'accuracy':>8} " + " ".join(f"{c:>8}" for c in cats))
        for tag, t in ds["tags"].items():
            lines.append(
                f"  {tag:<26} {t['n']:>4} {t['accuracy']:>8.3f} " + " ".join(f"{t[c]:>8.3f}" for c in cats)
            )
    for name, ds in result["datasets"].items():
        if ds["kind"] != "speech":
            continue
        lines += [
            "",
            f"{name}: {ds.get('model', '')} WER per clip (lower-cased, punctuation stripped; numbers not "
            "spelled out)",
        ]
        for clip in ds["clips"]:
            where = clip["path"] + (f" [ch {clip['channel']}]" if clip["channel"] is not None else "")
            lines.append(f"  {clip['wer']:>6.3f}  {where:<42} {clip['hypothesis']}")
        lines.append(
            f"  {ds['wer']:>6.3f}  overall ({ds['n']} clips, {sum(c['words'] for c in ds['clips'])} words)"
        )
    for name, ds in result["datasets"].items():
        if ds["kind"] == "spoken":
            lines += ["", *_spoken_lines(name, ds)]
    return "\n".join(lines)


def _spoken_lines(name: str, ds: dict[str, Any]) -> list[str]:
    """``multilingual_speech``: per language and text path, counts at the policy floors; then quality and
    cost; then every item (scores on the translation, the untranslated transcript and the reference)."""
    if "skipped" in ds:
        return [f"{name}: skipped: {ds['skipped']}"]
    floors = ", ".join(f"{c} {f:.2f}" for c, f in ds["floors"].items())
    lines = [
        f"{name}: {ds['model']} translating to English, language {ds['language']}, {ds['n']} clips; floors "
        f"{floors}",
        f"  {'lang':<5} {'text':<13} {'threat':>7} {'hate':>7} {'harmful':>8} {'benign clear':>13} "
        f"{'(all cats)':>10}",
    ]
    for lang, m in ds["languages"].items():
        n = m["n"]
        for path in ("translated", "untranslated", "reference"):
            c = m[path]
            lines.append(
                f"  {lang:<5} {path:<13} {c['threat']:>3}/{n['threat']:<3} {c['hate']:>3}/{n['hate']:<3} "
                f"{c['harmful']:>4}/{n['threat'] + n['hate']:<3} {c['benign_clear']:>9}/{n['benign']:<3} "
                f"{c['benign_clear_all']:>6}/{n['benign']:<3}"
            )
    lines.append(
        f"  {'lang':<5} {'ASR WER':>7} {'transl F1':>9} {'translated':>10} {'lang right':>10} "
        f"{'cpu s/chunk plain':>17} {'translating':>11} {'wall plain':>10} {'translating':>11} {'audio s':>7}"
    )
    for lang, m in ds["languages"].items():
        total = sum(m["n"].values())
        ratio = m["cpu_translate_s"] / m["cpu_plain_s"] if m["cpu_plain_s"] else 0.0
        right = f"{m['language_right']:>6}/{total:<3}" if ds["language"] == "auto" else f"{'-':>10}"
        lines.append(
            f"  {lang:<5} {m['asr_wer']:>7.3f} {m['translation_word_f1']:>9.3f} "
            f"{m['clips_translated']:>6}/{total:<3} {right} {m['cpu_plain_s']:>17.2f} "
            f"{m['cpu_translate_s']:>5.2f} x{ratio:<4.2f} {m['wall_plain_s']:>10.2f} "
            f"{m['wall_translate_s']:>11.2f} {m['audio_s']:>7.1f}"
        )
    lines.append("  items: label, threat/hate score on translation | untranslated | reference; text; heard")
    for r in ds["items"]:
        sc = r["scores"]
        cells = " | ".join(f"{sc[p].get('threat', 0.0):.2f}/{sc[p].get('hate', 0.0):.2f}"
                           for p in ("translated", "untranslated", "reference"))
        mark = "" if r["translated"] else " (untranslated)"
        lines.append(f"  [{r['language']} {r['label']:<6}] {cells}  {r['text']}")
        lines.append(f"  {'':>48}-> {r['translation']}{mark}  [heard: {r['transcript']}]")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="livesafe eval",
        description="Measure the text classifier and speech recognition on the shared data sets.",
    )
    ap.add_argument("--data", type=Path, default=None, help="shared data directory (default: %(default)s)")
    ap.add_argument("--dataset", action="append", choices=list(DATASETS), help="data set to run (repeatable)")
    ap.add_argument("--limit", type=int, default=None, help="at most N items per data set (a fixed sample)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--policy", type=Path, default=None, help="policy file (default: the bundled one)")
    ap.add_argument("--speech-model", default="tiny.en", help="Whisper tiny.en (default), base, or a dir")
    ap.add_argument(
        "--speech-language", default=None, help="language code or auto (default: en, or auto for base)"
    )
    ap.set_defaults(data=default_data_dir())
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    if args.speech_language is not None:
        from livesafe.core.languages import check_language

        problem = check_language(args.speech_model, args.speech_language)
        if problem:
            ap.error(problem)
    data_dir: Path = args.data
    if not data_dir.is_dir():
        print(
            f"livesafe eval: shared data directory not found: {data_dir} "
            "(pass --data DIR or set LIVESAFE_SHARED_DATA)",
            file=sys.stderr,
        )
        return 2
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"livesafe eval: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_eval(
            args.dataset, data_dir, policy, args.limit, args.speech_model, args.speech_language
        )
    except DataNotFoundError as exc:
        print(f"livesafe eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
