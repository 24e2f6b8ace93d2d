"""A real TBone process for the interop test (tests/tests/tbone_interop.rs).

Runs TBone 0.5.0.4's own MongoChannel on DATABASE, channel NAME (collection
`tbone_channel_NAME`), with TBone's own websocket carrier (SanicWebSocketCarrier)
over a stand-in socket that prints what TBone would send to a browser.

Usage: python peer.py URI DATABASE NAME DEADLINE_SECONDS

stdout, one JSON object per line:
  {"ready": {"collection": HOW}}   once TBone is tailing the collection; HOW is
      "joined"     it existed already (TBone only reads its name);
      "tbone"      TBone's create_channel created it (autoIndexId=False accepted);
      "no-autoIndexId: <server's error>"   the server refused TBone's
                   autoIndexId=False (MongoDB 4.0 and later), so this script
                   created it with TBone's other options, and TBone joined it.
  {"frame": TEXT}   TEXT is exactly what TBone's carrier sent for one event "e"
stdin, one JSON object per line, handled in order:
  {"publish": KEY, "data": VALUE}          TBone's channel.publish(KEY, VALUE)
  {"publish": KEY, "datetime": ISO}        ... with data {"at": datetime(ISO)}
  {"quit": true}                            exit 0 (so does the end of stdin)
Anything that goes wrong, or DEADLINE_SECONDS passing, ends the process with a
non-zero status and a message on stderr: a hung peer fails the test.
"""

import asyncio
import datetime
import json
import sys
import threading
import warnings

# TBone 0.5 and motor 1.x use APIs that Python 3.8 and pymongo 3.x deprecate.
warnings.simplefilter("ignore", DeprecationWarning)

from motor.motor_asyncio import AsyncIOMotorClient  # noqa: E402
from pymongo.errors import OperationFailure  # noqa: E402
from tbone.dispatch.carriers.sanic_websocket import SanicWebSocketCarrier  # noqa: E402
from tbone.dispatch.channels.mongo import MongoChannel  # noqa: E402

EVENT = "e"
READY_EVENT = "tbone-peer-ready"
CAPACITY, MESSAGE_SIZE = 2 ** 15, 1024  # TBone's create_channel defaults


def emit(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class PrintingSocket:
    """The websocket TBone's carrier writes to: each text becomes a line."""

    async def send(self, text):
        emit({"frame": text})


class Signal:
    """A carrier that only notes that an event came back."""

    def __init__(self):
        self.arrived = asyncio.Event()

    async def deliver(self, data):
        self.arrived.set()
        return True


async def create_collection(channel, db):
    """TBone's own create_channel, or, where the server refuses its
    autoIndexId=False, the same collection without that option."""
    if channel.name in await db.list_collection_names():
        await channel.create_channel()
        return "joined"
    try:
        await channel.create_channel()
        return "tbone"
    except OperationFailure as refused:
        if "autoIndexId" not in str(refused):
            raise
        await db.create_collection(
            channel.name, capped=True, size=CAPACITY * MESSAGE_SIZE, max=CAPACITY
        )
        await channel.create_channel()
        return "no-autoIndexId: {}".format(refused)


async def wait_until_tailing(channel, signal):
    """TBone reopens a dead cursor from the current second, so an event
    written just before a reopening is never seen; a cursor that returned a
    document stays open. Publish a marker until one comes back."""
    while not signal.arrived.is_set():
        await channel.publish(READY_EVENT)
        try:
            await asyncio.wait_for(signal.arrived.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


def read_commands(loop, queue):
    for line in sys.stdin:
        if line.strip():
            loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
    loop.call_soon_threadsafe(queue.put_nowait, {"quit": True})


async def run(uri, database, name):
    db = AsyncIOMotorClient(uri)[database]
    channel = MongoChannel(name=name, db=db)
    how = await create_collection(channel, db)
    signal = Signal()
    channel.subscribe(READY_EVENT, signal)
    channel.subscribe(EVENT, SanicWebSocketCarrier(PrintingSocket()))
    channel.kickoff()
    await wait_until_tailing(channel, signal)
    emit({"ready": {"collection": how}})

    commands = asyncio.Queue()
    loop = asyncio.get_event_loop()
    threading.Thread(target=read_commands, args=(loop, commands), daemon=True).start()
    while True:
        command = await commands.get()
        if command.get("quit"):
            break
        if "datetime" in command:
            data = {"at": datetime.datetime.fromisoformat(command["datetime"])}
        else:
            data = command["data"]
        await channel.publish(command["publish"], data)
    channel.active = False


def main():
    uri, database, name, deadline = sys.argv[1:]
    loop = asyncio.get_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(run(uri, database, name), float(deadline)))
    except asyncio.TimeoutError:
        print("tbone peer: still running after {}s; giving up".format(deadline), file=sys.stderr)
        sys.exit(3)
    finally:
        # TBone's consumer runs until cancelled.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


if __name__ == "__main__":
    main()
