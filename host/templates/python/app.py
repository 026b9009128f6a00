"""`{{name}}`: a sluice stage. Upper-cases the ASCII letters of each message's
value; other bytes (UTF-8 sequences included) pass through unchanged. An empty
message is rejected as `invalid` and goes to the dead-letter file.

Edit `process` to make it yours, then `sluice build` and `sluice test`.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import StageError_Invalid


class Stage(exports.Stage):
    def init(self, config: str) -> None:
        # The stage's `config` table from the pipeline file, as JSON text
        # (`{}` when there is none). `raise Err("why")` refuses it.
        log.log(log.Level.DEBUG, f"{{name}} starting with config {config}")

    def process(self, message):
        # One message in; its outputs out (an empty list drops it, several
        # split it), or an error: StageError_Invalid is dead-lettered at
        # once, StageError_Transient is retried with backoff. Return the
        # error, don't raise it.
        if not message.value:
            return Err(StageError_Invalid("empty message"))
        message.value = message.value.upper()  # bytes.upper(): ASCII only
        return Ok([message])

    def process_batch(self, messages):
        # Several messages in one call, one outcome each.
        return [self.process(m) for m in messages]
