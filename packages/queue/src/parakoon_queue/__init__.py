"""parakoon_queue: leaky bounded async queues.

Offering to a full queue drops one item and counts it; it never blocks the producer. See
:mod:`parakoon_queue.leaky` for the async queue and :mod:`parakoon_queue.buffer` for the pure
dropping rules, and ``docs/queue-and-conn.md`` for how the node uses them.

The anyio exceptions the queue raises are re-exported here so callers need not import anyio
just to catch them.
"""

from anyio import ClosedResourceError, EndOfStream, WouldBlock

from parakoon_queue.buffer import DropPolicy, LeakyBuffer, OfferOutcome
from parakoon_queue.leaky import GET_BATCH_MAX_ITEMS_DEFAULT, LeakyQueue, QueueStatistics

__all__ = [
    "GET_BATCH_MAX_ITEMS_DEFAULT",
    "ClosedResourceError",
    "DropPolicy",
    "EndOfStream",
    "LeakyBuffer",
    "LeakyQueue",
    "OfferOutcome",
    "QueueStatistics",
    "WouldBlock",
]
