"""Logging for a node and the command line: structlog, to stderr, pretty or JSON.

Every line carries a timestamp, a level and the node's name (``node=node_0``), plus whatever
key/value pairs the caller passed: the driver logs one line per role change, election,
catch-up, collapse and peer connect/disconnect with the slot numbers involved, e.g.::

    log = get_logger("parakoon_node.node")
    log.info("became master", slot=1042, lease_period_secs=2.0)

Two formats:

``pretty``
    structlog's ``ConsoleRenderer``: aligned, readable, colored only when stderr is a terminal
    (``NO_COLOR`` turns colors off; ``PARAKOON_LOG_COLOR=1`` or ``0`` forces them on or off,
    which the launcher uses so child processes behind a pipe keep the colors of its terminal).
``json``
    one JSON object per line with ``timestamp`` (ISO 8601, UTC, milliseconds), ``level``,
    ``node``, ``event`` and the extra keys, for log shippers and for tests that parse logs.

Records from the standard ``logging`` module (anyio, asyncio, libraries) go through the same
renderer, so a process writes exactly one format. structlog's own events are handed to stdlib
logging as well and rendered by a ``ProcessorFormatter`` on a single stderr handler; logging is
not on any hot path, so the extra hop costs nothing that matters and buys one output path.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Final, Literal, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LogFormat",
    "bind_context",
    "configure_logging",
    "get_logger",
]

LogFormat = Literal["pretty", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("pretty", "json")
LOG_LEVELS: Final[tuple[str, ...]] = ("debug", "info", "warning", "error", "critical")

# Marks the handler we install, so that configuring twice (tests, the launcher) replaces it
# instead of stacking a second one that would print every line twice.
_HANDLER_MARK: Final = "_parakoon_handler"


def _use_colors(stream: TextIO) -> bool:
    forced = os.environ.get("PARAKOON_LOG_COLOR")
    if forced in {"0", "1"}:
        return forced == "1"
    if "NO_COLOR" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _timestamper(fmt: LogFormat) -> Processor:
    """Pretty lines get a short local wall-clock time; JSON lines a full UTC timestamp."""

    def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        now = time.time()
        millis = int(now * 1000) % 1000
        if fmt == "json":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            event_dict.setdefault("timestamp", f"{stamp}.{millis:03d}Z")
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            event_dict.setdefault("timestamp", f"{stamp}.{millis:03d}")
        return event_dict

    return add_timestamp


def _node_adder(node: str | None) -> Processor:
    def add_node(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if node is not None:
            event_dict.setdefault("node", node)
        return event_dict

    return add_node


def _order_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Put the fixed fields first in JSON lines, so they read well even unparsed."""
    ordered: EventDict = {}
    for key in ("timestamp", "level", "node", "event"):
        if key in event_dict:
            ordered[key] = event_dict.pop(key)
    ordered.update(event_dict)
    return ordered


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Some libraries attach a pre-colored copy of their message; it would duplicate the event.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    fmt: LogFormat = "pretty",
    level: str = "info",
    node: str | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Set up structlog and stdlib logging for this process; safe to call more than once.

    ``fmt`` is ``"pretty"`` or ``"json"``; ``level`` one of :data:`LOG_LEVELS`; ``node`` is bound
    to every line as ``node=...``. Output goes to ``stream`` (default: ``sys.stderr`` at call time).
    Raises ``ValueError`` for an unknown format or level.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(LOG_FORMATS)}")
    level_name = level.lower()
    if level_name not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}")
    level_number = logging.getLevelNamesMapping()[level_name.upper()]
    out = stream if stream is not None else sys.stderr

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _node_adder(node),
        _timestamper(fmt),
        _drop_color_message,
    ]
    renderer: list[Processor]
    if fmt == "json":
        renderer = [
            structlog.processors.format_exc_info,
            _order_keys,
            structlog.processors.JSONRenderer(sort_keys=False, default=repr),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=_use_colors(out))]

    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from plain stdlib loggers get the same fields, plus the logger's name so a
        # library's line can be told from ours.
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level_number)

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # Not cached: a logger created before a later configure_logging() call must follow it.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """A structlog logger; ``initial_values`` are bound to every line it writes."""
    logger: FilteringBoundLogger = structlog.get_logger(name, **initial_values)
    return logger


def bind_context(**values: Any) -> None:
    """Bind ``values`` to every later line of this task and the tasks it starts (contextvars)."""
    structlog.contextvars.bind_contextvars(**values)
