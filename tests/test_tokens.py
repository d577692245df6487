"""Backend tokens: the tokens file, its validation, and rotation without downtime over real websockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livesafe.auth import TokenError, TokenSet, load_tokens_file
from livesafe.client import AuthenticationError, BackendClient
from livesafe.interventions.gateway import CLOSE_TOKEN_REVOKED, Gateway
from tests.waiting import until

WAIT = 5.0


def write(path: Path, content: str) -> None:
    """Replace the file atomically, as the docs advise (a new inode: the change is always seen)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)


# -- the file --------------------------------------------------------------------------------------------


def test_yaml_and_json_files_map_tokens_to_backends(tmp_path: Path) -> None:
    yml, jsn = tmp_path / "t.yaml", tmp_path / "t.json"
    write(yml, "acme: [new-tok, old-tok]\nglobex: g-tok\n")
    write(jsn, json.dumps({"acme": ["new-tok", "old-tok"], "globex": ["g-tok"]}))
    expected = {"new-tok": "acme", "old-tok": "acme", "g-tok": "globex"}
    assert load_tokens_file(yml) == load_tokens_file(jsn) == expected
    tokens = TokenSet({"cli-tok": "ops"}, file=yml)
    assert dict(tokens) == {"cli-tok": "ops", **expected}
    assert tokens.backends() == {"ops": 1, "acme": 2, "globex": 1}
    assert [tokens.lookup(t) for t in ("old-tok", "g-tok", "nope")] == ["acme", "globex", None]
    assert tokens.lookup("old-to") is None and tokens.lookup("") is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "got an empty file"),
        ("- a\n- b\n", "got a list"),
        ("acme: [\n", "not valid YAML or JSON"),
        ("acme: []\n", "non-empty list of tokens"),
        ("acme: [5]\n", "token #1 must be a non-empty string"),
        ("acme: [' padded ']\n", "without surrounding whitespace"),
        ("acme: [t1]\nglobex: [t1]\n", "listed for both 'acme' and 'globex'"),
        ("{}\n", "no tokens"),
    ],
)
def test_a_bad_file_is_refused_with_the_reason(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "tokens.yaml"
    write(path, content)
    with pytest.raises(TokenError, match=reason) as info:
        TokenSet(file=path)
    assert str(path) in str(info.value)


def test_missing_file_and_conflict_with_fixed_tokens_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read tokens file"):
        TokenSet(file=tmp_path / "absent.yaml")
    path = tmp_path / "tokens.yaml"
    write(path, "acme: [shared]\n")
    with pytest.raises(TokenError, match="also given for 'ops'"):
        TokenSet({"shared": "ops"}, file=path)


def test_reload_applies_a_good_file_and_keeps_the_old_tokens_on_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.yaml"
    write(path, "acme: [old]\n")
    tokens = TokenSet(file=path)
    changes: list[int] = []
    tokens.subscribe(lambda: changes.append(tokens.version))
    assert tokens.reload() is False  # unchanged
    write(path, "acme: [old, new]\n")
    assert tokens.reload() is True and tokens.lookup("new") == "acme" and changes == [1]
    write(path, "acme: [new\n")  # broken mid-edit
    with caplog.at_level(logging.ERROR, logger="livesafe.auth"):
        assert tokens.reload() is False
        assert tokens.reload() is False  # reported once, not at every check
    assert len([r for r in caplog.records if "not reloaded" in r.message]) == 1
    assert dict(tokens) == {"old": "acme", "new": "acme"}
    path.unlink()
    assert tokens.reload() is False and tokens.lookup("old") == "acme"  # a vanished file keeps them too
    write(path, "acme: [new]\n")
    assert tokens.reload() is True and dict(tokens) == {"new": "acme"} and changes == [1, 2]


# -- rotation over real websockets -------------------------------------------------------------------------


async def connect_with(gw: Gateway, token: str) -> ClientConnection:
    ws = await connect(gw.url, additional_headers={"Authorization": f"Bearer {token}"},
                       open_timeout=WAIT, close_timeout=1)
    async with asyncio.timeout(WAIT):
        assert json.loads(await ws.recv())["type"] == "hello"
    return ws


async def wait_version(tokens: TokenSet, version: int) -> None:
    async with asyncio.timeout(WAIT):
        await until(lambda: tokens.version >= version)


async def test_rotation_old_and_new_work_then_removing_old_closes_and_refuses_it(
    r: redis.asyncio.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.yaml"
    write(path, "acme: [old-token]\nglobex: [g-token]\n")
    tokens = TokenSet(file=path)
    async with Gateway(r, tokens, prefix=prefix, tokens_reload_s=0.02) as gw:
        old = await connect_with(gw, "old-token")
        globex = await connect_with(gw, "g-token")
        # Step 1: add the new token beside the old one; both are valid at once.
        write(path, "acme: [new-token, old-token]\nglobex: [g-token]\n")
        await wait_version(tokens, 1)
        new = await connect_with(gw, "new-token")
        client = BackendClient(gw.url, "old-token", backoff_initial_s=0.01, backoff_max_s=0.05)
        await client.start()
        await client.wait_connected()
        # Step 3: remove the old one. Its connections are closed with 4001; new ones get 401.
        write(path, "acme: [new-token]\nglobex: [g-token]\n")
        await wait_version(tokens, 2)
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(WAIT):
                await old.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (CLOSE_TOKEN_REVOKED, "token revoked")
        with pytest.raises(AuthenticationError, match="401"):  # the client reconnects, and is refused
            async with asyncio.timeout(WAIT):
                await anext(client)
        await client.aclose()
        with pytest.raises(InvalidStatus) as refused:
            await connect_with(gw, "old-token")
        assert refused.value.response.status_code == 401
        # The new token's and the other backend's connections were left alone.
        for ws in (new, globex):
            await ws.send(json.dumps({"type": "ping", "ref": 1}))
            async with asyncio.timeout(WAIT):
                assert json.loads(await ws.recv()) == {"type": "pong", "ref": 1}
        # A bad file is logged and the tokens in force stay: the new token still connects.
        with caplog.at_level(logging.ERROR, logger="livesafe.auth"):
            write(path, "acme: new-token: oops\n")
            async with asyncio.timeout(WAIT):
                await until(lambda: any("not reloaded" in rec.message for rec in caplog.records))
        assert tokens.version == 2
        async with await connect_with(gw, "new-token"):
            pass
        for ws in (new, globex):
            await ws.close()
    assert gw._tasks == set()  # the reload task was cancelled and awaited


async def test_a_gateway_without_a_file_runs_no_reload_task(r: redis.asyncio.Redis, prefix: str) -> None:
    async with Gateway(r, {"t": "acme"}, prefix=prefix) as gw:
        assert not any(t.get_name() == "gateway-tokens-reload" for t in gw._tasks)
        assert gw.tokens.lookup("t") == "acme"


async def test_whip_follows_the_rotated_tokens(tmp_path: Path) -> None:
    """The WHIP endpoint shares the live token set: a token added to the file is accepted there at once,
    a removed one is refused (401), with no restart."""
    import aiohttp
    from aiohttp import web

    from livesafe.ingest.source import IngestOptions
    from livesafe.ingest.whip import WhipEndpoint

    path = tmp_path / "tokens.yaml"
    write(path, "acme: [old]\n")
    tokens = TokenSet(file=path)

    async def on_session(*_args: object) -> None:
        return None

    whip = WhipEndpoint(tokens, on_session, options=IngestOptions())
    runner = web.AppRunner(whip.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{whip.prefix}/s1"
    try:
        async with aiohttp.ClientSession() as http:

            async def status(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
                async with http.post(url, data=b"not sdp", headers=headers) as response:
                    return response.status

            assert await status("old") == 400  # authenticated; the offer itself is refused
            assert await status("new") == 401
            write(path, "acme: [new]\n")
            assert tokens.reload()
            assert await status("new") == 400
            assert await status("old") == 401
    finally:
        await runner.cleanup()
