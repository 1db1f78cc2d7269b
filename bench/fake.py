"""The fake upstream (`tests/fake_upstream.py`) in its own process, with the knobs the benchmarks need.

    python bench/fake.py [--latency S] [--chat-reply TEXT] [--stream-chunk-delay S] [--image-long-side N]
                         [--image-noise] [--send-log FILE]

Prints its base URL on the first line of stdout, then serves until SIGTERM. In its own process it shares
the machine's CPUs with the servers under test, but not their interpreter (the GIL) nor the client's.
With `--send-log`, each answer appends the `time.monotonic()` at which its first SSE event and its last
byte were handed to the socket (CLOCK_MONOTONIC is one clock for every process on Linux).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_upstream import FakeUpstream


class TimedFake(FakeUpstream):
    """Logs `<time.monotonic()> <path> first|last` when an answer's first SSE event and its last byte are sent."""

    send_log: Path | None = None

    async def _asgi(self, scope, receive, send):  # type: ignore[override]
        if self.send_log is None:
            return await super()._asgi(scope, receive, send)
        path = scope.get("path")
        first = True

        async def logged_send(message):
            nonlocal first
            if message["type"] == "http.response.body":
                events = []
                if first and message.get("body", b"").startswith(b"data:"):
                    first = False
                    events.append("first")
                if not message.get("more_body", False):
                    events.append("last")
                if events:
                    with self.send_log.open("a") as log:
                        log.writelines(f"{time.monotonic()} {path} {event}\n" for event in events)
            await send(message)

        return await super()._asgi(scope, receive, logged_send)


def keep_connections_open() -> None:
    """Idle keep-alive connections last 75 s (nginx's default) instead of uvicorn's 5 s.

    Opening 100 sessions takes the client several seconds; with 5 s the servers' pooled upstream
    connections are closed under them, and a reused one fails (the floor has no retries).
    """
    init = uvicorn.Config.__init__

    def patched(self, *args, **kwargs):
        kwargs.setdefault("timeout_keep_alive", 75)
        init(self, *args, **kwargs)

    uvicorn.Config.__init__ = patched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chat-reply")
    parser.add_argument("--stream-chunk-delay", type=float, default=0.0)
    parser.add_argument("--image-long-side", type=int, default=64)
    parser.add_argument("--image-noise", action="store_true")
    parser.add_argument("--send-log", type=Path, help="append send times here (see TimedFake)")
    args = parser.parse_args()
    keep_connections_open()
    fake = TimedFake()
    fake.latency = args.latency
    fake.chat_reply = args.chat_reply
    fake.stream_chunk_delay = args.stream_chunk_delay
    fake.image_long_side = args.image_long_side
    fake.image_noise = args.image_noise
    fake.send_log = args.send_log
    fake.start()
    print(fake.base_url, flush=True)
    fake.serve_forever()


if __name__ == "__main__":
    main()
