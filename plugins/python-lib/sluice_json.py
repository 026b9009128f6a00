"""JSON helpers shared by the Python stages: parsing with the same limits as
the Rust stages (serde_json), JSON type names for messages, dotted field paths.

`componentize.sh` builds it into every Python stage beside its `app.py`.
"""

import json
import re
from typing import Any

# Marks a field that is absent from the document (JSON `null` is a value).
MISSING = object()


class Invalid(Exception):
    """A message the stage rejects; becomes `stage-error.invalid`."""


def kind(v: Any) -> str:
    """The JSON type name of `v`, for error messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):  # before int: bool is a subclass of int
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and the Rust stages) do not.
    raise ValueError(f"`{name}` is not valid JSON")


# serde_json refuses documents nested 128 levels deep, and so do we: much
# deeper input would overflow the WebAssembly stack inside json.loads (a trap,
# not a Python exception).
MAX_DEPTH = 127
STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
BRACKET = re.compile(rb"[][{}]")


def too_deep(value: bytes) -> bool:
    if value.count(b"[") + value.count(b"{") <= MAX_DEPTH:
        return False  # the usual case, decided without a Python-level loop
    depth = 0
    for b in BRACKET.findall(STRING.sub(b"", value)):
        depth += 1 if b in (b"[", b"{") else -1
        if depth > MAX_DEPTH:
            return True
    return False


def parse_json(value: bytes) -> Any:
    if too_deep(value):
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    # Decode explicitly: given bytes, json.loads would also guess UTF-16/32.
    return json.loads(value.decode("utf-8"), parse_constant=reject_constant)


class FieldPath:
    """A dotted path into a JSON document; a digit segment indexes an array."""

    def __init__(self, name: str, text: Any):
        if not isinstance(text, str):
            raise ValueError(f"`{name}` must be a string, got a {kind(text)}")
        self.text = text
        self.segments = text.split(".")
        if "" in self.segments:
            raise ValueError(f"`{text}` is not a field path: use names separated by dots, e.g. `user.email`")

    def get(self, doc: Any) -> Any:
        """The field, or MISSING."""
        for seg in self.segments:
            if isinstance(doc, dict) and seg in doc:
                doc = doc[seg]
            elif isinstance(doc, list) and seg.isascii() and seg.isdigit() and int(seg) < len(doc):
                doc = doc[int(seg)]
            else:
                return MISSING
        return doc

    def __str__(self) -> str:
        return self.text
