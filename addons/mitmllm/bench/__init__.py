"""mitmllm's figures: ``python -m mitmllm.bench`` (``just bench``).

Sections, each printing its figures next to their targets:

* ``codec``: SSE codec + validators (and the rewrite pipeline) in process, one core, MB/s and
  events/s on the mock upstream's `long` stream in every wire format;
* ``big``: one 8, 16 and 32 MiB event: time and peak memory grow linearly;
* ``proxy``: mitmdump + mitmllm (the inspect-only tap, restamping, the validation worker)
  against plain streaming mitmdump in every wire format at one and four events per chunk: CPU
  time per event and events/s, measured in the same run, and the added time to first byte;
* ``sizes``: 4 KiB and 64 KiB events through the tap against plain mitmdump;
* ``relay``: tap-only and relay against plain mitmdump (when the addon chain has the relay):
  events/s, added time to first byte, and the latency each event gets on its way;
* ``concurrency``: 100 streams at 20 events/s each through each setup: events/s held, added
  per-event latency (p50, p99), the proxy's memory, CPU (per event, against plain mitmdump)
  and full garbage collections;
* ``soak``: 100 concurrent streams through the relay with faults drawn at random from the mock's
  scenarios, and clients that go away: corrupted frames, duplicate message_starts, lost bytes and
  the breakers' and sticky sessions' state afterwards, all of which must be nought;
* ``memory``: one 256 MiB stream through plain mitmdump, the tap, the relay and the recorder:
  the peak RSS of each mitmdump process, and what mitmllm adds to plain's.

A benchmark prints figures; it never fails because a machine is slow. A figure that misses its
target is marked MISS and followed by the hot spots of a profile.
"""

from __future__ import annotations

SECTIONS: tuple[str, ...] = (
    "codec",
    "big",
    "proxy",
    "sizes",
    "relay",
    "concurrency",
    "soak",
    "memory",
)
