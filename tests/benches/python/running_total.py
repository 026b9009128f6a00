"""The reference for `cargo bench --bench scripted`: plugins/py-running-total's
transform as a plain CPython loop, the way the pipeline it replaces would be
written: read JSON lines, add each key's running total, write JSON lines.

    python3 running_total.py IN OUT

The same steps as the stage, in the same order (parse, find the key and the
amount by their dotted paths, check their types, read the stored total as
decimal text, add, write the document and the new total back), with a dict
where the stage has the host's state. Prints the seconds the loop took (from
opening the files to closing them, without the interpreter's start-up) and the
CPU seconds it used.
"""

import json
import math
import re
import sys
import time

KEY = ("user",)
AMOUNT = ("amount",)


def get(doc, path):
    for seg in path:
        if not isinstance(doc, dict) or seg not in doc:
            return None
        doc = doc[seg]
    return doc


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_total(stored):
    text = stored.decode("ascii")
    total = int(text) if re.fullmatch(r"-?[0-9]+", text) else float(text)
    if not math.isfinite(total):
        raise ValueError(f"not a decimal number: {text}")
    return total


def main(inp, out):
    totals = {}
    started, cpu = time.perf_counter(), time.process_time()
    with open(inp, "rb") as source, open(out, "wb") as sink:
        for line in source:
            doc = json.loads(line)
            key = get(doc, KEY)
            if isinstance(key, str):
                key = key.encode("utf-8")
            elif is_number(key):
                key = json.dumps(key).encode("utf-8")
            else:
                raise ValueError(f"bad key: {key!r}")
            amount = get(doc, AMOUNT)
            if not is_number(amount) or not isinstance(doc, dict):
                raise ValueError(f"bad amount: {amount!r}")
            stored = totals.get(key)
            total = (parse_total(stored) if stored is not None else 0) + amount
            if not math.isfinite(total):
                raise ValueError("the total overflows")
            doc["total"] = total
            sink.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
            totals[key] = json.dumps(total).encode("ascii")
    print(f"{time.perf_counter() - started:.6f} {time.process_time() - cpu:.6f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
