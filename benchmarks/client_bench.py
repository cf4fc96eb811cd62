"""Codec throughput: encode and decode of SET and GET requests (and their responses).

What is measured, per operation, all in one thread and without sockets:

* ``request encode+decode``: ``encode_request`` on the client side, then ``RequestDecoder.feed``
  and ``next_event`` on the server side: the headline figure (aim: >= 300,000 ops/s);
* ``response encode+decode``: ``encode_response`` on the server side, ``decode_response`` on the
  client side;
* ``full exchange``: both of the above;
* ``sequence of 100 sets``: ``encode_update`` / ``decode_update`` of a replication payload.

Each figure is the best of several short repeats, because the machine may be shared (the output
says so when the load average is above 1). Run: ``uv run --all-packages python
benchmarks/client_bench.py [--ops N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section

from parakoon_client.codec import (
    AnyRequest,
    Get,
    RequestDecoder,
    Set,
    USequence,
    USet,
    decode_response,
    decode_update,
    encode_request,
    encode_response,
    encode_update,
)

KEY_COUNT = 1000
VALUE_BYTES = 100


def _requests() -> list[AnyRequest]:
    sets: list[AnyRequest] = [
        Set(key=b"key_%08d" % i, value=b"v" * VALUE_BYTES) for i in range(KEY_COUNT)
    ]
    gets: list[AnyRequest] = [Get(key=b"key_%08d" % i) for i in range(KEY_COUNT)]
    # Interleaved, as a mixed workload would send them.
    return [r for pair in zip(sets, gets, strict=True) for r in pair]


def best_rates(runs: list[Callable[[], int]], repeats: int) -> list[float]:
    """Operations per second of the fastest of ``repeats`` runs of each (a run returns its op
    count). The runs take turns, so that a burst of load from other work on a shared machine
    hits every measure alike instead of one of them."""
    best = [0.0] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            ops = run()
            elapsed = time.perf_counter() - start
            best[i] = max(best[i], ops / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000, help="operations per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update performance.md")
    args = parser.parse_args()

    requests = _requests()
    rounds = max(1, args.ops // len(requests))
    ops = rounds * len(requests)
    encoded = [encode_request(r) for r in requests]
    results: list[object] = [None if isinstance(r, Set) else b"v" * VALUE_BYTES for r in requests]
    responses = [encode_response(r, v) for r, v in zip(requests, results, strict=True)]
    pairs = list(zip(requests, encoded, results, responses, strict=True))

    def encode_only() -> int:
        for _ in range(rounds):
            for r in requests:
                encode_request(r)
        return ops

    def decode_only() -> int:
        decoder = RequestDecoder(expect_prologue=False)
        feed, next_event = decoder.feed, decoder.next_event
        for _ in range(rounds):
            for data in encoded:
                feed(data)
                next_event()
        return ops

    def request_round_trip() -> int:
        decoder = RequestDecoder(expect_prologue=False)
        feed, next_event = decoder.feed, decoder.next_event
        for _ in range(rounds):
            for r in requests:
                feed(encode_request(r))
                next_event()
        return ops

    def response_round_trip() -> int:
        for _ in range(rounds):
            for r, _data, v, _resp in pairs:
                decode_response(r, encode_response(r, v))
        return ops

    def full_exchange() -> int:
        decoder = RequestDecoder(expect_prologue=False)
        feed, next_event = decoder.feed, decoder.next_event
        for _ in range(rounds):
            for r, _data, v, _resp in pairs:
                feed(encode_request(r))
                decode_response(r, encode_response(next_event(), v))  # type: ignore[arg-type]
        return ops

    sequence = USequence(
        updates=tuple(USet(key=b"key_%08d" % i, value=b"v" * VALUE_BYTES) for i in range(100))
    )
    blob = encode_update(sequence)
    assert decode_update(blob) == sequence
    seq_rounds = max(1, ops // 100 // 10)

    def sequence_encode() -> int:
        for _ in range(seq_rounds):
            encode_update(sequence)
        return seq_rounds * 100

    def sequence_decode() -> int:
        for _ in range(seq_rounds):
            decode_update(blob)
        return seq_rounds * 100

    measures = [
        ("request encode (client)", encode_only, "requests/s"),
        ("request decode (server, feed + next_event)", decode_only, "requests/s"),
        ("**request encode+decode**", request_round_trip, "requests/s"),
        ("response encode+decode", response_round_trip, "responses/s"),
        ("full exchange (request and response, both sides)", full_exchange, "exchanges/s"),
        ("sequence of 100 sets: encode_update", sequence_encode, "updates/s"),
        ("sequence of 100 sets: decode_update", sequence_decode, "updates/s"),
    ]
    rates = best_rates([run for _, run, _ in measures], args.repeats)
    rows = []
    for (name, _, unit), rate in zip(measures, rates, strict=True):
        rows.append((name, f"{rate:,.0f}", unit))
        print(f"{name:55s} {rate:>12,.0f} {unit}")

    load = os.getloadavg()[0]
    shared = (
        f"The machine was shared while this ran (1-minute load average {load:.1f} on "
        f"{os.cpu_count()} cores): figures are noisy and on the low side."
        if load > 1.0
        else f"1-minute load average {load:.1f}."
    )
    print(shared)
    body = (
        f"Mixed workload: {KEY_COUNT} SETs of {VALUE_BYTES}-byte values and {KEY_COUNT} GETs, "
        f"interleaved, keys of 12 bytes; {ops:,} operations per repeat, best of "
        f"{args.repeats} repeats. Pure codec, one thread, no sockets. Aim for request "
        "encode+decode: at least 300,000 requests/s.\n\n"
        + markdown_table(["what", "rate", "unit"], rows)
        + f"\n\n{shared}\n"
    )
    if not args.no_write:
        write_section("client_codec", "Client protocol codec (benchmarks/client_bench.py)", body)


if __name__ == "__main__":
    main()
