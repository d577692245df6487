"""The ops board over a real HTTP/websocket server on localhost."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from websockets.asyncio.client import connect

from livesafe.board.server import VIEWER_QUEUE, Board
from livesafe.core.events import Intervention, InterventionLifted, RiskUpdate, Signal, Transcript, to_dict


def iv(stream: str, ts: float) -> Intervention:
    return Intervention(stream, ts, f"iv-{ts}", 1, "warn", "warn", 1, "threat", 0.6, ("notice",),
                        "threat risk 0.60", "default", "abc")


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


async def test_page_state_and_live_updates() -> None:
    async with Board(policy_name="default", policy_hash="abc") as board:
        board.publish(Transcript("s1", 1.0, 2.0, "hello there"))
        board.publish(RiskUpdate("s1", 2.0, "threat", 0.6, 0.6, "warn"))
        board.publish(iv("s1", 2.0))
        board.publish(Signal("s1", 2.0, "threat", 0.9, "x"))  # not forwarded: risk updates carry it
        status, ctype, body = await asyncio.to_thread(get, board.url)
        assert status == 200 and ctype.startswith("text/html") and "livesafe board" in body
        _, ctype, body = await asyncio.to_thread(get, board.url + "v1/board/state")
        state = json.loads(body)
        assert ctype == "application/json" and state["policy"] == {"name": "default", "hash": "abc"}
        (s1,) = state["streams"]
        assert s1["tier"] == "warn" and s1["levels"] == {"threat": 0.6}
        assert s1["transcripts"][0]["text"] == "hello there" and s1["interventions"][0]["action"] == "warn"
        async with connect(f"ws://127.0.0.1:{board.port}/v1/board") as ws:
            snapshot = json.loads(await ws.recv())
            assert snapshot["type"] == "snapshot" and snapshot["streams"][0]["stream_id"] == "s1"
            board.publish(RiskUpdate("s2", 5.0, "nudity", 0.3, 0.3, "observe"))
            board.stream_state("s2", "ended")
            update = json.loads(await ws.recv())
            assert update["type"] == "event" and update["event"]["stream_id"] == "s2"
            assert json.loads(await ws.recv()) == {"type": "stream.state", "stream_id": "s2",
                                                   "state": "ended", "detail": ""}


async def test_unknown_path_is_404() -> None:
    async with Board() as board:
        try:
            await asyncio.to_thread(get, board.url + "nope")
        except urllib.error.HTTPError as err:
            assert err.code == 404
        else:
            raise AssertionError("expected 404")


async def test_a_viewer_that_does_not_read_holds_a_bounded_backlog() -> None:
    async with Board() as board:
        async with connect(f"ws://127.0.0.1:{board.port}/v1/board", max_queue=1, close_timeout=0.5) as ws:
            await ws.recv()
            for i in range(VIEWER_QUEUE * 20):
                board.publish(RiskUpdate("s", float(i), "threat", 0.1, 0.1, "none"))
            viewer = next(iter(board._viewers))
            assert len(viewer.queue) <= VIEWER_QUEUE
            await asyncio.sleep(0)


async def test_lifts_show_beside_the_interventions_they_end() -> None:
    warn = iv("s1", 2.0)
    lift = InterventionLifted("s1", 30.0, "lf-1", warn.intervention_id, 2, "risk_fell", "warn", "warn",
                              "threat", ("notice",), "default", "abc", detail="risk fell")
    async with Board() as board:
        board.publish(warn)
        async with connect(f"ws://127.0.0.1:{board.port}/v1/board") as ws:
            json.loads(await ws.recv())  # snapshot
            board.publish(lift)
            update = json.loads(await ws.recv())
        assert update == {"type": "event", "event": to_dict(lift)}
        (s1,) = board.snapshot()["streams"]
        assert [x["type"] for x in s1["interventions"]] == ["intervention", "intervention.lifted"]
