"""The leader's persistent request queue against a list oracle (seeded; PARAKOON_SEED)."""

from __future__ import annotations

import os
import random

from parakoon_paxos import ClientRequest, RequestQueue


def test_queue_matches_a_list_oracle() -> None:
    seed = int(os.environ.get("PARAKOON_SEED", "1234"))
    print(f"seed={seed}")
    rng = random.Random(seed)
    rounds = 20_000 if os.environ.get("PARAKOON_LONG") == "1" else 2_000
    q = RequestQueue()
    oracle: list[ClientRequest] = []
    rid = 0
    for _ in range(rounds):
        if rng.random() < 0.55:
            batch = []
            for _ in range(rng.randrange(0, 6)):
                batch.append(ClientRequest(rid=rid, payload=b"x" * rng.randrange(0, 20)))
                rid += 1
            q = q.push(tuple(batch))
            oracle.extend(batch)
        else:
            count, nbytes = rng.randrange(1, 8), rng.randrange(0, 60)
            taken, q2 = q.take(count, nbytes)
            expect: list[ClientRequest] = []
            total = 0
            for r in oracle:
                if len(expect) >= count or (expect and total + len(r.payload) > nbytes):
                    break
                expect.append(r)
                total += len(r.payload)
            assert list(taken) == expect
            del oracle[: len(expect)]
            old_size = q.size
            q = q2
            assert q.size == old_size - len(taken)
        assert q.size == len(oracle)
    assert list(q.all()) == oracle
