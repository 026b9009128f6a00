"""`py-running-total`: a running total per key, kept in the stage's state.

    [stages.config]
    key_field = "user"      # dotted path to the key: a string, or a number used as text
    amount_field = "amount" # dotted path to a number added to the key's total

Each JSON message leaves with `"total"` added: the sum of `amount_field` over
every message with its key so far, this one included. Totals live in the
stage's state (`sluice:pipeline/state`), one entry per key holding the total as
decimal text (`b"42"`, `b"12.5"`), so they carry on across runs and
`sluice state` shows them readably. With `partition_by = "key"` the host keeps
separate state per message key; the stage does not care.

Errors, all `invalid` (the key's total is then left as it was): a value that is
not a JSON object, a missing field, a key that is not a string or a number, an
amount that is not a number, a total that overflows. Integers add up exactly;
once a float is involved the total is a float, as in JSON generally. Build with
`./build.sh OUT.wasm`.
"""

import json
import math
import re
from typing import Any, List, Optional, Union

from componentize_py_types import Err, Ok, Result
from sluice_json import MISSING, FieldPath, Invalid, is_number, kind, parse_json
from wit_world import exports
from wit_world.imports import state
from wit_world.imports.types import Message, StageError, StageError_Invalid

Number = Union[int, float]


def number_text(n: Number) -> str:
    """`n` as JSON number text: `42`, `12.5`."""
    return json.dumps(n)


def parse_total(key: bytes, stored: bytes) -> Number:
    """A total stored by this stage: decimal text of an integer or a float."""
    try:
        text = stored.decode("ascii")
        total = int(text) if re.fullmatch(r"-?[0-9]+", text) else float(text)
        if not math.isfinite(total):
            raise ValueError
        return total
    except ValueError:  # UnicodeDecodeError is a ValueError
        shown = stored.decode("utf-8", "replace")
        key_text = key.decode("utf-8", "replace")
        raise Invalid(f"state under key `{key_text}` is not a decimal number: `{shown}`")


class RunningTotal:
    """A parsed, checked configuration."""

    FIELDS = ("key_field", "amount_field")

    def __init__(self, config: Any):
        if not isinstance(config, dict):
            raise ValueError(f"expected a table, got a {kind(config)}")
        unknown = [k for k in config if k not in self.FIELDS]
        if unknown:
            raise ValueError(f"unknown field `{unknown[0]}`, expected `key_field` or `amount_field`")
        for name in self.FIELDS:
            if name not in config:
                raise ValueError(f"missing field `{name}`")
        self.key_field = FieldPath("key_field", config["key_field"])
        self.amount_field = FieldPath("amount_field", config["amount_field"])

    def key(self, doc: Any) -> str:
        v = self.key_field.get(doc)
        if v is MISSING:
            raise Invalid(f"no field `{self.key_field}`")
        if isinstance(v, str):
            return v
        if is_number(v):
            return number_text(v)
        raise Invalid(f"field `{self.key_field}` is a {kind(v)}, but the key must be a string or a number")

    def amount(self, doc: Any) -> Number:
        v = self.amount_field.get(doc)
        if v is MISSING:
            raise Invalid(f"no field `{self.amount_field}`")
        if not is_number(v):
            raise Invalid(f"field `{self.amount_field}` is a {kind(v)}, but the amount must be a number")
        return v

    def process(self, message: Message) -> Message:
        try:
            doc = parse_json(message.value)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise Invalid(f"value is not the expected JSON: {e}")
        key = self.key(doc).encode("utf-8")
        amount = self.amount(doc)
        if not isinstance(doc, dict):
            raise Invalid(f"cannot add `total`: the value is a JSON {kind(doc)}, not an object")
        stored = state.get(key)
        total = (parse_total(key, stored) if stored is not None else 0) + amount
        if not math.isfinite(total):
            raise Invalid(f"the total for key `{key.decode()}` overflows")
        doc["total"] = total
        message.value = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        # Last, so that a message that fails leaves its key's total alone.
        state.set(key, number_text(total).encode("ascii"))
        return message


# The host calls `init` once per fresh instance, before any message. The
# configuration lives at module level: it does not depend on how the bindings
# instantiate the `Stage` class. The totals live in the host's state, so every
# instance of the stage shares them.
_stage: Optional[RunningTotal] = None


def outcome(message: Message) -> Result[List[Message], StageError]:
    if _stage is None:
        # The host always calls `init` first; reaching this is a host bug.
        raise RuntimeError("sluice called the stage before `init`")
    try:
        return Ok([_stage.process(message)])
    except Invalid as e:
        return Err(StageError_Invalid(str(e)))


class Stage(exports.Stage):
    def init(self, config: str) -> None:
        # `result<_, string>` is mapped to "return None or raise Err(str)".
        global _stage
        try:
            _stage = RunningTotal(json.loads(config))
        except ValueError as e:
            raise Err(f"invalid config: {e}")

    # `outcome` is a named type, so the bindings return it as a value
    # (Ok/Err) instead of raising.
    def process(self, message: Message) -> Result[List[Message], StageError]:
        return outcome(message)

    def process_batch(self, messages: List[Message]) -> List[Result[List[Message], StageError]]:
        return [outcome(m) for m in messages]
