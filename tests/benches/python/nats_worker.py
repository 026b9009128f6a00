"""A JetStream worker in Python, the reference the brokers bench sets sluice
against: what a good Python engineer would write with the official client
(nats-py), asyncio and batches.

    nats_worker.py URL STREAM CONSUMER OUT_SUBJECT

Reads a durable pull consumer (explicit acks, at most 1000 unacknowledged,
as sluice's default) in batches of up to 256, upper-cases each payload three
times (the `upper` stage three times over), publishes every result of the
batch at once and waits until the server has stored them all, then acks the
batch: at least once, as sluice. Each publish carries a Nats-Msg-Id from the
input's stream sequence, as sluice's sink does, so a redelivered input is
not stored twice. Runs until interrupted (SIGINT), then ends after the batch in hand.
"""

import asyncio
import signal
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig

BATCH = 256


async def work(url: str, stream: str, consumer: str, out_subject: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000, ack_wait=30)
    sub = await js.pull_subscribe("", durable=consumer, stream=stream, config=config)
    # SIGINT: finish the batch in hand (published, stored and acked), then stop.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    while not stop.is_set():
        try:
            batch = await sub.fetch(BATCH, timeout=1)
        except asyncio.TimeoutError:  # nothing to read within a second
            continue
        stored = [
            await js.publish_async(
                out_subject,
                msg.data.upper().upper().upper(),
                headers={"Nats-Msg-Id": f"{stream}:{msg.metadata.sequence.stream}"},
            )
            for msg in batch
        ]
        await asyncio.gather(*stored)
        for msg in batch:
            await msg.ack()
    await nc.drain()  # the acks sent before the connection closes


if __name__ == "__main__":
    asyncio.run(work(*sys.argv[1:5]))
