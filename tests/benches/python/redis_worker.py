"""A Redis Streams worker in Python, the reference the brokers bench sets
sluice against: what a good Python engineer would write with the official
client (redis-py's asyncio API) and batches.

    redis_worker.py URL STREAM GROUP CONSUMER OUT_STREAM

Reads the consumer group (XREADGROUP, up to 256 entries a call), upper-cases
each entry's `value` three times (the `upper` stage three times over), adds
the results to OUT_STREAM in one pipelined round trip (XADD), and only then
acknowledges the batch (XACK): at least once, as sluice. Runs until
interrupted (SIGINT).
"""

import asyncio
import signal
import sys

import redis.asyncio as redis
from redis.exceptions import ResponseError

BATCH = 256


async def work(url: str, stream: str, group: str, consumer: str, out_stream: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        await r.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    # SIGINT: finish the batch in hand (published, stored and acked), then stop.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    while not stop.is_set():
        reply = await r.xreadgroup(group, consumer, {stream: ">"}, count=BATCH, block=1000)
        if not reply:
            continue
        entries = reply[0][1]
        async with r.pipeline(transaction=False) as pipe:
            for _, fields in entries:
                pipe.xadd(out_stream, {b"value": fields[b"value"].upper().upper().upper()})
            await pipe.execute()
        await r.xack(stream, group, *(entry_id for entry_id, _ in entries))
    await r.aclose()


if __name__ == "__main__":
    asyncio.run(work(*sys.argv[1:6]))
