"""The ``livesafe`` command line: watch, run, demo, policy check, convert-whisper, eval, bench."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from livesafe import __version__
from livesafe.commands import history
from livesafe.core.events import Event, Intervention, Signal, StreamState, Tick, Transcript, to_dict
from livesafe.core.ids import check_stream_id, stream_id_problem
from livesafe.core.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from livesafe.auth import TokenSet
    from livesafe.interventions.webhooks import WebhookEndpoint
    from livesafe.service import Service

log = logging.getLogger("livesafe")

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_TOKEN = "demo-token"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livesafe", description="Live-stream safety monitor.")
    p.add_argument("--version", action="version", version=f"livesafe {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("watch", help="monitor one file or URL and print signals and interventions")
    w.add_argument("source", help="a media file or URL that FFmpeg can open")
    w.add_argument("--policy", type=Path, help="policy YAML (default: the bundled default policy)")
    w.add_argument("--json", action="store_true", help="print one JSON object per line")
    w.add_argument("--stream-id", default="", help="stream id to use (default: the file name)")
    w.add_argument("--risk", action="store_true", help="also print risk updates")
    w.add_argument("--listen", action="store_true",
                   help="SOURCE is an rtmp://, rtsp:// or srt:// address to listen on for a publisher")
    pace = w.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="pacing", action="store_const", const="realtime",
                      help="pace a file as if it were live")
    pace.add_argument("--fast", dest="pacing", action="store_const", const="fast",
                      help="process as fast as the machine can (default)")
    w.set_defaults(pacing="fast")

    r = sub.add_parser("run", help="run the service: backend websocket gateway, Redis, stream workers")
    _service_args(r)
    r.add_argument("--stream", action="append", default=[], metavar="ID=SOURCE",
                   help="monitor SOURCE as stream ID from the start (repeatable)")
    r.add_argument("--fast", dest="pacing", action="store_const", const="fast", default="realtime",
                   help="process file sources as fast as possible instead of in real time")

    d = sub.add_parser("demo", help="run the service on bundled demo streams with a simulated backend")
    _service_args(d, default_port=8765)
    d.add_argument("--loop", action="store_true", help="replay the demo streams until interrupted")

    history.add_parsers(sub)

    ct = sub.add_parser("classify-text", help="score lines of text from stdin with the text classifier")
    ct.add_argument("--policy", type=Path, help="policy YAML (thresholds and extra terms)")
    ct.add_argument("--batch", type=int, default=64, help="lines scored per model pass")

    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    chk = pol_sub.add_parser("check", help="validate policy files")
    chk.add_argument("files", nargs="+", type=Path)

    # These parse their own options (see _delegated); listed here for --help.
    sub.add_parser("eval", help="measure analyzers on labelled datasets (../shared/data)", add_help=False)
    sub.add_parser("bench", help="measure this machine: live streams kept up (`bench capacity`)",
                   add_help=False)

    sub.add_parser("convert-whisper", help="convert the packaged CTranslate2 Whisper to openai-whisper",
                   add_help=False)
    return p


def _delegated(argv: list[str]) -> int | None:
    """``eval``, ``bench`` and ``convert-whisper`` take their own options: hand them the rest of the line."""
    if argv and argv[0] == "eval":
        from livesafe.eval import main as eval_main

        return eval_main(argv[1:])
    if argv and argv[0] == "bench":
        from livesafe.bench.cli import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "convert-whisper":
        from livesafe.analyzers.whisper_convert import main as convert_main

        return convert_main(argv[1:])
    return None


def _service_args(p: argparse.ArgumentParser, default_port: int = 8765) -> None:
    p.add_argument("--policy", type=Path, help="policy YAML (default: the bundled default policy)")
    p.add_argument("--host", default=os.environ.get("LIVESAFE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LIVESAFE_PORT", default_port)))
    p.add_argument("--token", action="append", default=[], metavar="NAME=TOKEN",
                   help="a backend name and its token (repeatable; also LIVESAFE_TOKENS=name=token,...)")
    p.add_argument("--tokens-file", type=Path, metavar="FILE",
                   help="YAML/JSON file of backend name -> list of tokens, re-read when it changes "
                        "(rotation without downtime; also LIVESAFE_TOKENS_FILE)")
    p.add_argument("--prefix", default="livesafe", help="Redis key prefix")
    p.add_argument("--webhook", action="append", default=[], metavar="[NAME=]URL",
                   help="also deliver interventions as signed POSTs to URL (Standard Webhooks; repeatable); "
                        "secrets in LIVESAFE_WEBHOOK_SECRETS=whsec_new,whsec_old (all sign, newest first)")
    p.add_argument("--board-port", type=int, default=int(os.environ.get("LIVESAFE_BOARD_PORT", 8766)),
                   help="port of the ops board web page (0: any free port)")
    p.add_argument("--no-board", action="store_true", help="do not serve the ops board")
    p.add_argument("--http-port", type=int, default=int(os.environ.get("LIVESAFE_HTTP_PORT", 8767)),
                   help="port of the HTTP control API (0: any free port)")
    p.add_argument("--source-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="a directory whose files backends may name as sources (repeatable; also "
                        "LIVESAFE_SOURCE_DIRS=dir:dir); without one, backends may name URLs only")
    p.add_argument("--source-schemes", default=os.environ.get("LIVESAFE_SOURCE_SCHEMES"), metavar="S,S",
                   help="URL schemes backends may name (default: http,https,rtmp(s),rtsp(s),srt,whep(s))")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the embedded Redis keeps its data without REDIS_URL (default: "
                        "$LIVESAFE_DATA_DIR or ~/.local/share/livesafe)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Models come from installed packages only: never let a library reach for a hub, or draw progress bars.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if (code := _delegated(argv)) is not None:
        return code
    args = _parser().parse_args(argv)
    level = logging.WARNING if args.command in ("watch", "classify-text") else logging.INFO
    level = max(logging.DEBUG, level - 10 * args.verbose)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Per-call chatter of libraries; livesafe's own log says what matters.
    for noisy in ("faster_whisper", "websockets.server", "websockets.client", "httpx"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    try:
        if args.command == "policy":
            return _policy_check(args.files)
        if args.command == "audit":
            return asyncio.run(history.audit(args))
        if args.command == "timeline":
            return asyncio.run(history.timeline(args))
        policy = load_policy(args.policy)
        if args.command == "classify-text":
            return _classify_text(policy, args.batch)
        if args.command == "watch":
            return asyncio.run(_watch(args, policy))
        return asyncio.run(_serve(args, policy))
    except PolicyError as exc:
        print(f"livesafe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# -- policy check ------------------------------------------------------------------------------------

def _policy_check(files: list[Path]) -> int:
    failed = 0
    for f in files:
        try:
            policy = load_policy(f)
        except PolicyError as exc:
            failed += 1
            print(exc, file=sys.stderr)
            continue
        print(f"ok: {f}: policy {policy.name!r} hash {policy.hash}, {len(policy.categories)} categories, "
              f"tiers {' > '.join(t.name for t in policy.ladder.tiers)}")
    return 1 if failed else 0


# -- classify-text -----------------------------------------------------------------------------------

def _classify_text(policy: Policy, batch: int) -> int:
    """One JSON object per input line: the text, its score per category, and the flagged categories."""
    from livesafe.analyzers.text import TextClassifier, TextOptions

    classifier = TextClassifier(TextOptions(extra_terms=dict(policy.analyzers.extra_terms)))
    lines: list[str] = []

    def emit() -> None:
        for text, scores in zip(lines, classifier.scores_batch(lines), strict=True):
            flagged = [c for c, s in scores.items() if (cat := policy.category(c)) and s >= cat.floor]
            line = {"text": text, "scores": scores, "flagged": flagged}
            print(json.dumps(line, ensure_ascii=False), flush=True)
        lines.clear()

    for raw in sys.stdin:
        lines.append(raw.rstrip("\n"))
        if len(lines) >= max(1, batch):
            emit()
    if lines:
        emit()
    return 0


# -- watch -------------------------------------------------------------------------------------------

class _Printer:
    """Prints events as JSON lines or readable lines."""

    def __init__(self, policy: Policy, as_json: bool, risk: bool, out: TextIO = sys.stdout) -> None:
        self.policy = policy
        self.as_json = as_json
        self.risk = risk
        self.out = out

    def __call__(self, event: Event) -> None:
        if (event.type == "risk" and not self.risk) or isinstance(event, Tick):
            return
        data = to_dict(event)
        if isinstance(event, Transcript):  # the names a transcript line is documented with
            data["start"], data["end"] = data["media_ts"], data["end_ts"]
        if isinstance(event, Signal):
            cat = self.policy.category(event.category)
            data["flagged"] = cat is not None and event.score >= cat.floor
            if not self.as_json and not data["flagged"]:
                return
        if self.as_json:
            print(json.dumps(data, ensure_ascii=False), file=self.out, flush=True)
        else:
            print(self._line(event), file=self.out, flush=True)

    @staticmethod
    def _line(event: Event) -> str:
        ts = f"[{event.stream_id} {event.media_ts:7.2f}s]"
        if isinstance(event, Transcript):
            return f"{ts} transcript: {event.text}"
        if isinstance(event, Signal):
            return f"{ts} signal {event.category} {event.score:.2f} ({event.analyzer})"
        if isinstance(event, StreamState):
            return f"{ts} stream {event.state}" + (f": {event.detail}" if event.detail else "")
        if isinstance(event, Intervention):
            return (f"{ts} INTERVENTION {event.action.upper()} tier={event.tier} "
                    f"effects={','.join(event.effects)}: {event.reason}")
        return f"{ts} {event.type}: {to_dict(event)}"


def _stream_id_from(source: str) -> str:
    """A valid stream id from a source's file name (characters not allowed become ``_``)."""
    stem = Path(urllib.parse.urlsplit(source).path).stem
    cleaned = re.sub(r"[^A-Za-z0-9._:-]", "_", stem).lstrip("._:-")[:128]
    return cleaned or "stream"


async def _watch(args: argparse.Namespace, policy: Policy) -> int:
    from livesafe.analyzers.registry import Analyzers
    from livesafe.core.monitor import Monitor
    from livesafe.ingest.opener import is_live_source, open_stream_source
    from livesafe.ingest.source import Pacing, SourceError, ingest_options
    from livesafe.pipeline import StreamWorker
    from livesafe.timeline.sessions import new_session_id

    if args.stream_id and (problem := stream_id_problem(args.stream_id)) is not None:
        print(f"livesafe: --stream-id: {problem}", file=sys.stderr)
        return 2
    stream_id = args.stream_id or _stream_id_from(args.source)
    printer = _Printer(policy, args.json, args.risk)
    live = args.listen or is_live_source(args.source)
    pacing: Pacing = "realtime" if live else args.pacing
    clock = {"media_ts": 0.0}

    async def sink(event: Event) -> None:
        clock["media_ts"] = max(clock["media_ts"], event.media_ts)
        printer(event)

    def on_state(sid: str, state: str, detail: str) -> None:
        printer(StreamState(sid, clock["media_ts"], state, detail))

    try:
        source = open_stream_source(stream_id, args.source, ingest_options(policy.sampling, pacing),
                                    listen=args.listen, on_state=on_state)
    except SourceError as exc:
        print(f"livesafe: {exc}", file=sys.stderr)
        return 2
    analyzers = await asyncio.to_thread(Analyzers.load, policy)
    if args.listen:
        print(f"livesafe: waiting for a publisher on {args.source}", file=sys.stderr, flush=True)
    worker = StreamWorker(source, analyzers, Monitor(policy), sink, url=args.source,
                          adaptive=pacing == "realtime", lanes=pacing == "realtime",
                          session=new_session_id())
    summary = await worker.run()
    data = summary.as_dict()
    data["policy"], data["policy_hash"], data["session"] = policy.name, policy.hash, worker.session
    if args.json:
        print(json.dumps(data), flush=True)
    else:
        print("summary: " + json.dumps(data, indent=2), flush=True)
    if summary.error:
        print(f"livesafe: stream {stream_id} stopped: {summary.error}", file=sys.stderr)
        return 1
    return 0


# -- run / demo --------------------------------------------------------------------------------------

def _tokens(args: argparse.Namespace, demo: bool) -> TokenSet:
    """--token / LIVESAFE_TOKENS, plus --tokens-file / LIVESAFE_TOKENS_FILE (re-read when it changes)."""
    from livesafe.auth import TokenError, TokenSet

    pairs = list(args.token)
    env = os.environ.get("LIVESAFE_TOKENS", "")
    pairs += [p for p in env.split(",") if p.strip()]
    tokens: dict[str, str] = {}
    for pair in pairs:
        name, sep, token = pair.partition("=")
        if not sep or not name.strip() or not token.strip():
            raise SystemExit(f"livesafe: bad token {pair!r}: expected NAME=TOKEN")
        tokens[token.strip()] = name.strip()
    file = args.tokens_file or os.environ.get("LIVESAFE_TOKENS_FILE") or None
    if demo and not tokens and not file:
        tokens[DEMO_TOKEN] = "demo-backend"
    try:
        token_set = TokenSet(tokens, file=file)
    except TokenError as exc:
        raise SystemExit(f"livesafe: bad tokens: {exc}") from None
    if not token_set:
        raise SystemExit("livesafe: no backend token: pass --token NAME=TOKEN, set LIVESAFE_TOKENS, or "
                         "--tokens-file FILE")
    return token_set


def _webhooks(args: argparse.Namespace) -> tuple[WebhookEndpoint, ...]:
    from livesafe.interventions.webhooks import WebhookEndpoint

    if not args.webhook:
        return ()
    secrets = tuple(s.strip() for s in os.environ.get("LIVESAFE_WEBHOOK_SECRETS", "").split(",") if s.strip())
    if not secrets:
        raise SystemExit("livesafe: --webhook needs LIVESAFE_WEBHOOK_SECRETS (whsec_... secrets, "
                         "newest first)")
    endpoints: list[WebhookEndpoint] = []
    for spec in args.webhook:
        name, sep, url = spec.partition("=")
        if not sep or "://" in name:
            name, url = f"webhook{len(endpoints) + 1}", spec
        try:
            endpoints.append(WebhookEndpoint(url.strip(), secrets, name=name.strip()))
        except ValueError as exc:
            raise SystemExit(f"livesafe: bad --webhook {spec!r}: {exc}") from None
    return tuple(endpoints)


async def _serve(args: argparse.Namespace, policy: Policy) -> int:
    from livesafe.analyzers.registry import Analyzers
    from livesafe.app import AppOptions, open_app
    from livesafe.ingest.opener import DEFAULT_SCHEMES, SourceRules
    from livesafe.service import ServiceOptions
    from livesafe.store import data_dir

    demo = args.command == "demo"
    tokens = _tokens(args, demo)
    webhooks = _webhooks(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"livesafe {__version__}: policy {policy.name!r} ({policy.hash}); loading models...", flush=True)
    analyzers = await asyncio.to_thread(Analyzers.load, policy)
    dirs = [*args.source_dir, *(Path(d) for d in os.environ.get("LIVESAFE_SOURCE_DIRS", "").split(":") if d)]
    if demo:
        dirs.append(DEMO_DIR)
    if missing := [str(d) for d in dirs if not d.is_dir()]:
        raise SystemExit(f"livesafe: --source-dir: not a directory: {', '.join(missing)}")
    schemes = tuple(x.strip().lower() for x in args.source_schemes.split(",") if x.strip()) \
        if args.source_schemes else DEFAULT_SCHEMES
    options = ServiceOptions(
        host=args.host, port=args.port, tokens=tokens, prefix=args.prefix,
        pacing=getattr(args, "pacing", "realtime"), webhooks=webhooks,
        sources=SourceRules(tuple(dirs), schemes),
    )
    streams: list[tuple[str, str]] = []
    for spec in getattr(args, "stream", []):
        stream_id, sep, source = spec.partition("=")
        if not sep or not source:
            raise SystemExit(f"livesafe: bad --stream {spec!r}: expected ID=SOURCE")
        try:
            streams.append((check_stream_id(stream_id), source))
        except ValueError as exc:
            raise SystemExit(f"livesafe: bad --stream {spec[:60]!r}: {exc}") from None
    app_options = AppOptions(
        options, redis_url=os.environ.get("REDIS_URL") or None, data_dir=args.data_dir or data_dir(),
        http_port=args.http_port, board=not args.no_board, board_port=args.board_port,
    )
    async with open_app(policy, analyzers, app_options) as app:
        service = app.service
        if app.data_dir is not None:
            print(f"timeline: embedded Redis, data kept in {app.data_dir} (`livesafe timeline STREAM_ID` "
                  "reads it)", flush=True)
        print(f"backend websocket: {service.gateway.url} (Authorization: Bearer <token>)", flush=True)
        print(f"control API: {app.http.url}/v1/streams, WHIP: {app.http.url}/whip/{{stream_id}} "
              "(Authorization: Bearer <token>)", flush=True)
        if app.board is not None:
            print(f"board: {app.board.url}", flush=True)
        if demo:
            return await _demo(service, args, stop)
        for stream_id, source in streams:
            try:
                service.start_stream(stream_id, source, trusted=True, started_by="cli")
            except ValueError as exc:
                raise SystemExit(f"livesafe: --stream {stream_id}: {exc}") from None
        print("running; Ctrl-C to stop", flush=True)
        await stop.wait()
    return 0


async def _until_done_or_stopped(service: Service, ids: list[str], stop: asyncio.Event) -> None:
    async def all_done() -> None:
        for stream_id in ids:
            await service.wait(stream_id)

    tasks = [asyncio.create_task(all_done()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)


async def _demo(service: Service, args: argparse.Namespace, stop: asyncio.Event) -> int:
    """A simulated backend connects, announces the demo streams and prints what livesafe sends it."""
    from livesafe.client import BackendClient

    manifest = json.loads((DEMO_DIR / "streams.json").read_text())
    token = next(iter(service.options.tokens))
    async with BackendClient(service.gateway.url, token) as backend:
        await backend.wait_connected()
        name = backend.hello.get("backend") if backend.hello else None
        print(f"simulated backend connected as {name!r}", flush=True)

        async def receive() -> None:
            async for msg in backend:
                if (lift := msg.lifted) is not None:
                    print(f"backend <- LIFTED   {lift.stream_id} at {lift.media_ts:5.1f}s "
                          f"{lift.intervention_id} ({lift.reason})", flush=True)
                else:
                    iv = msg.intervention
                    print(f"backend <- {iv.action.upper():8} {iv.stream_id} at {iv.media_ts:5.1f}s "
                          f"tier={iv.tier} effects={','.join(iv.effects)} | {iv.reason}", flush=True)
                await backend.ack(msg)

        receiver = asyncio.create_task(receive(), name="demo-backend")
        try:
            round_ = 0
            while not stop.is_set():
                round_ += 1
                ids = []
                for name, meta in manifest.items():
                    stream_id = f"{name}-{round_}" if args.loop else name
                    reply = await backend.send_control({
                        "type": "stream.started", "stream_id": stream_id,
                        "source": str(DEMO_DIR / meta["file"]), "metadata": {"title": meta["title"]},
                    })
                    print(f"backend -> stream.started {stream_id}: {reply.get('type')}", flush=True)
                    ids.append(stream_id)
                await _until_done_or_stopped(service, ids, stop)
                for i in ids:
                    s = service.summaries.get(i)
                    if s is not None:
                        d = s.as_dict()
                        print(f"summary {i}: highest tier {d['highest_tier']}, interventions "
                              f"{d['interventions']}, max risk {d['max_risk']}", flush=True)
                if not args.loop:
                    await asyncio.sleep(1.0)  # let the last acks travel
                    break
        finally:
            receiver.cancel()
            await asyncio.wait([receiver])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
