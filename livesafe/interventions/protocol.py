"""The backend protocol's version and JSON Schemas, and validation of the messages a backend sends.

The schemas live in ``protocol.schema.json`` beside this module (one ``$defs`` entry per message; see
``docs/protocol.md``). The gateway validates every incoming message against them before acting on it, and
the tests validate every outgoing message against them, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from livesafe.core.ids import stream_id_problem

#: The protocol this livesafe speaks, and every version it accepts in a backend's ``hello``.
PROTOCOL = "livesafe.v1"
SUPPORTED: tuple[str, ...] = (PROTOCOL,)

SCHEMA_PATH = Path(__file__).resolve().parent / "protocol.schema.json"
#: Longest ``reason`` put in an error reply (a bad message must not make a huge reply).
MAX_REASON = 300


class ProtocolError(ValueError):
    """A message the gateway cannot accept; ``code`` and the text go back in the ``error`` reply."""

    def __init__(self, reason: str, code: str = "bad_message", **extra: Any) -> None:
        super().__init__(reason)
        self.code = code
        self.extra = extra


@functools.cache
def schema() -> dict[str, Any]:
    """The whole protocol schema document."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(loaded)
    return loaded


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    root = schema()
    return Draft202012Validator({"$defs": root["$defs"], "$ref": f"#/$defs/{name}"})


def incoming_types() -> tuple[str, ...]:
    """Message types a backend may send, sorted."""
    return tuple(sorted(schema()["x-incoming"]))


def outgoing_types() -> tuple[str, ...]:
    return tuple(sorted(schema()["x-outgoing"]))


def _describe(error: ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator in ("oneOf", "anyOf") and isinstance(error.schema, Mapping):
        what = str(error.schema.get("description") or error.message)
    elif error.validator == "required" and isinstance(error.validator_value, list):
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [k for k in error.validator_value if k not in present]
        what = f"missing {missing[0]!r}" if missing else error.message
    elif error.validator == "type":
        got = type(error.instance).__name__
        what = f"must be of type {error.validator_value!r}, got {got}"
    elif where == "stream_id" and (problem := stream_id_problem(error.instance)) is not None:
        return problem[:MAX_REASON]  # names the allowed characters and length, quoting a short prefix
    else:
        what = error.message
    text = f"{where}: {what}" if where else what
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _check(name: str, message: Mapping[str, Any], kind: str) -> None:
    errors = sorted(_validator(name).iter_errors(message), key=lambda e: (list(e.absolute_path), e.validator))
    if errors:
        raise ProtocolError(f"{kind}: {_describe(errors[0])}", "bad_message")


def check_incoming(message: object) -> str:
    """Validate one parsed message from a backend; returns its type, or raises :class:`ProtocolError`."""
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(message).__name__}", "bad_message")
    kind = message.get("type")
    names: dict[str, str] = schema()["x-incoming"]
    if not isinstance(kind, str) or kind not in names:
        what = "missing 'type'" if kind is None else f"unknown message type {str(kind)[:50]!r}"
        raise ProtocolError(f"{what}; expected one of: {', '.join(sorted(names))}", "unknown_type")
    _check(names[kind], message, kind)
    return kind


def check_outgoing(message: Mapping[str, Any]) -> str:
    """Validate a message livesafe sends (used by tests); returns its type, or raises ProtocolError."""
    kind = message.get("type")
    names: dict[str, str] = schema()["x-outgoing"]
    if not isinstance(kind, str) or kind not in names:
        raise ProtocolError(f"not an outgoing message type: {kind!r}", "unknown_type")
    _check(names[kind], message, kind)
    return kind
