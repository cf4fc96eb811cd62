r"""``parakoon client``: run one client command against the cluster and print its answer.

::

    parakoon client --config cluster.toml [--node NAME] [--consistency C] COMMAND [ARGS...]
    parakoon client --config cluster.toml [OPTIONS]          # no command: an interactive shell

Every protocol command has a subcommand named as in docs/spec/architecture.md (``get``, ``set``,
``range-entries``, ``who-master``, ...). Keys and values are given as text and sent as UTF-8.

Output rules (stdout), the same for every command:

* a value, key or name: its text, decoded from UTF-8, with every byte that would make the
  output ambiguous escaped: ``\\`` for a backslash, ``\t``, ``\n``, ``\r``, and ``\xNN`` for
  any other control byte (NUL included) or byte that is not UTF-8. So one item is always one
  line and a key/value pair is always ``key<TAB>value``;
* ``true`` / ``false`` for booleans, decimal numbers for counts and transaction numbers;
* lists: one item per line; for ``multi-get-option`` a key without a value is printed alone;
* ``statistics``: ``name<TAB>value`` per line: ``start``/``last`` as UTC timestamps,
  latencies in milliseconds, other fractions with three decimals, ``-`` where nothing was
  measured yet (the protocol's placeholder is the largest double, or NaN);
* commands without an answer (``set``, ``delete``, ``assert``, ...): nothing;
* ``get --raw`` writes the value's bytes exactly, without a newline (``set``/``confirm`` take
  ``--value-file PATH``, ``-`` for stdin, for the other direction), so binary values round-trip;
* ``--json`` (before the command): one JSON document instead, ``{"result": ...}``. A byte
  string is a JSON string when it is UTF-8, else ``{"base64": "..."}``; pairs are two-element
  arrays; absent values are ``null``; statistics are an object of raw numbers (``null`` where
  nothing was measured).

Errors go to stderr as one line naming what failed (the key, the node) and the exit code says
what kind of failure it was:

====  =====================================================================================
0     success (``exists`` and ``expect-progress-possible`` print ``false`` and still exit 0)
1     any other error (a bad request, an unexpected answer)
2     usage or configuration error (also: every node closed the connection right after the
      prologue, which is what a node does with a wrong cluster id)
3     not found: the key (or, for ``delete``, the key to delete) does not exist
4     a comparison failed: ``assert``, ``assert-exists``, a ``sequence``'s assertion, or
      ``test-and-set`` whose expected value was not the value found (it still prints that value)
5     unavailable: no master, no node reachable, or the node asked is not master
====  =====================================================================================

The command is sent with the blocking :class:`parakoon_client.Client` (``Client.call``), so it
follows the library's routing and retry rules (docs/client.md). Without ``--node`` writes and
consistent reads go to the master (found by asking the nodes), ``no-guarantees``/``at-least``
reads to any node, and transient failures (no master yet, a node down) are retried for
``--retry`` seconds (default 10). With ``--node NAME`` the command goes to that node and nowhere
else: no master discovery, no redirect, and one attempt unless ``--retry`` says otherwise. That
is how one reads a given node's local state (``--consistency no-guarantees``) or runs an
administrative command (``drop-master``, ``collapse``, ``statistics``) on a given node.

Without a command, :func:`shell` reads commands from stdin, one per line, each parsed as the
arguments after ``parakoon client`` (words split as a POSIX shell does, ``#`` starts a comment)
with the options given on the command line as defaults; ``help``, ``help COMMAND`` and
``quit`` besides. On a terminal it prompts, keeps a readline history (``~/.parakoon_history``,
or the file ``PARAKOON_HISTORY`` names) and completes command names; from a pipe it runs the
lines silently. A failing command prints its error and the shell goes on; the shell's exit
code is the last command's.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TextIO, cast

from parakoon_client.blocking import Client
from parakoon_client.codec import (
    CONSISTENT,
    DEFAULT_LIMITS,
    NO_GUARANTEES,
    AnyRequest,
    Assert,
    AssertExists,
    AtLeast,
    Collapse,
    Confirm,
    Consistency,
    CopyDbToHead,
    CurrentState,
    DefragDb,
    Delete,
    DeletePrefix,
    DropMaster,
    Exists,
    ExpectProgressPossible,
    FlushStore,
    Get,
    GetKeyCount,
    GetTxid,
    MultiGet,
    MultiGetOption,
    NamedFloat,
    NamedInt,
    NamedInt64,
    NamedList,
    NamedString,
    NamedValue,
    NoGuarantees,
    Nop,
    OptimizeDb,
    Ping,
    PrefixKeys,
    Range,
    RangeEntries,
    Replace,
    Request,
    RevRangeEntries,
    Sequence,
    Set,
    Statistics,
    TestAndSet,
    UAssert,
    UAssertExists,
    UDelete,
    UDeletePrefix,
    Update,
    UReplace,
    UserFunction,
    USet,
    Version,
    VersionInfo,
    WhoMaster,
)
from parakoon_client.errors import (
    ArakoonError,
    ArakoonNotConnected,
    AssertionFailed,
    GoingDown,
    NoLongerMaster,
    NoMasterFound,
    NotFound,
    NotMaster,
)
from parakoon_node.commands.direct import DirectConnection
from parakoon_node.commands.tls_options import (
    add_tls_options,
    client_ssl_context,
    load_client_config,
)
from parakoon_node.runtime.config import ClusterConfig, ConfigError, NodeConfig

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
    "SequenceSyntaxError",
    "add_parser",
    "format_result",
    "parse_consistency",
    "parse_sequence",
    "run",
    "shell",
]


EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_CHECK_FAILED: Final = 4
EXIT_UNAVAILABLE: Final = 5
DEFAULT_TIMEOUT_SECS: Final = 10.0
# Long enough to ride out a master failover (about one lease period plus an election), short
# enough that a command against a cluster that is down gives up while the user still waits.
DEFAULT_RETRY_SECS: Final = 10.0
CLIENT_ID: Final = "parakoon-cli"


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def parse_consistency(text: str) -> Consistency:
    """``consistent`` | ``no-guarantees`` | ``at-least:N`` (N a transaction number >= 0)."""
    if text == "consistent":
        return CONSISTENT
    if text == "no-guarantees":
        return NO_GUARANTEES
    prefix = "at-least:"
    if text.startswith(prefix):
        stamp_text = text[len(prefix) :]
        if stamp_text.isdigit() and int(stamp_text) < 2**63:
            return AtLeast(stamp=int(stamp_text))
    raise argparse.ArgumentTypeError(
        f"expected consistent, no-guarantees or at-least:N, got {text!r}"
    )


def _utf8(text: str) -> bytes:
    # Command-line text that was not valid UTF-8 arrives with surrogate escapes; give the bytes
    # back as they were typed.
    return text.encode("utf-8", "surrogateescape")


def _max_keys(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -1 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected -1 (no limit) or a count, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"expected 0..86400 seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 1 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class SequenceSyntaxError(ValueError):
    """A ``sequence`` argument list that does not parse; the message says where."""


# Each sequence operation: its word, the names of its arguments and how to build the update.
_SEQUENCE_OPS: Final[dict[str, tuple[tuple[str, ...], Callable[[list[bytes]], Update]]]] = {
    "set": (("KEY", "VALUE"), lambda a: USet(key=a[0], value=a[1])),
    "delete": (("KEY",), lambda a: UDelete(key=a[0])),
    "delete-prefix": (("PREFIX",), lambda a: UDeletePrefix(prefix=a[0])),
    "replace": (("KEY", "VALUE"), lambda a: UReplace(key=a[0], wanted=a[1])),
    "remove": (("KEY",), lambda a: UReplace(key=a[0], wanted=None)),
    "assert": (("KEY", "VALUE"), lambda a: UAssert(key=a[0], expected=a[1])),
    "assert-absent": (("KEY",), lambda a: UAssert(key=a[0], expected=None)),
    "assert-exists": (("KEY",), lambda a: UAssertExists(key=a[0])),
}
SEQUENCE_GRAMMAR: Final = "; ".join(
    " ".join((word, *names)) for word, (names, _) in _SEQUENCE_OPS.items()
)


def parse_sequence(words: list[str]) -> tuple[Update, ...]:
    """Turn ``set k v delete k2 ...`` into updates; raises :class:`SequenceSyntaxError`."""
    updates: list[Update] = []
    position = 0
    while position < len(words):
        word = words[position]
        if word not in _SEQUENCE_OPS:
            raise SequenceSyntaxError(
                f"word {position + 1} ({word!r}) is not an operation; expected one of:"
                f" {', '.join(_SEQUENCE_OPS)}"
            )
        names, build = _SEQUENCE_OPS[word]
        arguments = words[position + 1 : position + 1 + len(names)]
        if len(arguments) < len(names):
            raise SequenceSyntaxError(
                f"{word!r} at word {position + 1} needs {' '.join(names)}, got {len(arguments)}"
                " argument(s)"
            )
        updates.append(build([_utf8(argument) for argument in arguments]))
        position += 1 + len(names)
    return tuple(updates)


# ---------------------------------------------------------------------------------------------
# The commands: how to build each request and how to print its answer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    # Reads with a consistency argument (class C) take --consistency; other commands ignore it.
    build: Callable[[argparse.Namespace], AnyRequest]


def _key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY")


def _key_value(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY")
    parser.add_argument("value", metavar="VALUE", nargs="?", help="the value as text")
    parser.add_argument(
        "--value-file",
        metavar="PATH",
        help="take the value's bytes from PATH instead ('-' for stdin), for binary values",
    )


class ValueSourceError(ValueError):
    """Neither or both of VALUE and --value-file, or the file cannot be read."""


def _value(args: argparse.Namespace) -> bytes:
    """The value of ``set``/``confirm``: VALUE as UTF-8, or the bytes of ``--value-file``."""
    if (args.value is None) == (args.value_file is None):
        raise ValueSourceError("give VALUE or --value-file PATH (exactly one)")
    if args.value is not None:
        return _utf8(args.value)
    if args.value_file == "-":
        return sys.stdin.buffer.read()
    try:
        with open(args.value_file, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueSourceError(f"--value-file {args.value_file}: {exc.strerror or exc}") from None


def _get_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY")
    parser.add_argument(
        "--raw", action="store_true", help="write the value's bytes as they are, no newline"
    )


def _keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("keys", metavar="KEY", nargs="+")


def _nothing(parser: argparse.ArgumentParser) -> None:
    del parser


def _range_arguments(parser: argparse.ArgumentParser, reverse: bool = False) -> None:
    low, high = ("upper", "lower") if reverse else ("lower", "upper")
    parser.add_argument("--first", metavar="KEY", help=f"{low} bound (default: none)")
    parser.add_argument(
        "--first-exclusive", action="store_true", help="leave the --first key itself out"
    )
    parser.add_argument("--last", metavar="KEY", help=f"{high} bound (default: none)")
    parser.add_argument(
        "--last-exclusive", action="store_true", help="leave the --last key itself out"
    )
    parser.add_argument(
        "--max", type=_max_keys, default=-1, metavar="N", help="at most N keys (default: all)"
    )


def _range_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "first": None if args.first is None else _utf8(args.first),
        "first_inclusive": not args.first_exclusive,
        "last": None if args.last is None else _utf8(args.last),
        "last_inclusive": not args.last_exclusive,
        "max_keys": args.max,
        "consistency": args.consistency,
    }


def _prefix_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prefix", metavar="PREFIX")
    parser.add_argument(
        "--max", type=_max_keys, default=-1, metavar="N", help="at most N keys (default: all)"
    )


def _tas_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY")
    parser.add_argument("--expected", metavar="VALUE", help="the value now (default: absent)")
    parser.add_argument("--wanted", metavar="VALUE", help="the new value (default: delete)")


def _optional_value(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY")
    parser.add_argument("value", metavar="VALUE", nargs="?", help="omitted: absent")


def _optional(text: str | None) -> bytes | None:
    return None if text is None else _utf8(text)


def _prefix_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prefix", metavar="PREFIX")


def _sequence_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--synced", action="store_true", help="SYNCED_SEQUENCE: fsync before answering"
    )
    parser.add_argument("words", metavar="OP", nargs="*", help=SEQUENCE_GRAMMAR)


def _build_sequence(args: argparse.Namespace) -> Sequence:
    return Sequence(updates=parse_sequence(args.words), synced=args.synced)


def _user_function_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="NAME")
    parser.add_argument("argument", metavar="ARG", nargs="?", help="omitted: none")


def _ping_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-id", default=CLIENT_ID, metavar="ID")


def _collapse_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "count",
        metavar="N",
        type=_count,
        nargs="?",
        default=1,
        help="segments (tlogs) to keep uncollapsed (default: 1)",
    )


def _copy_db_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("count", metavar="N", type=_count, help="segments (tlogs) to keep")


COMMANDS: Final[tuple[_Command, ...]] = (
    # Session and information commands (class A: any node answers).
    _Command(
        name="ping",
        help="check that a node answers",
        arguments=_ping_arguments,
        build=lambda a: Ping(client_id=a.client_id, cluster_id=a.cluster_id),
    ),
    _Command(
        name="who-master",
        help="the master's name, confirmed by the master itself (exit 5 if none)",
        arguments=_nothing,
        build=lambda a: WhoMaster(),
    ),
    _Command(
        name="version", help="the node's version", arguments=_nothing, build=lambda a: Version()
    ),
    _Command(
        name="current-state",
        help="the node's consensus state",
        arguments=_nothing,
        build=lambda a: CurrentState(),
    ),
    _Command(
        name="expect-progress-possible",
        help="whether writes can make progress",
        arguments=_nothing,
        build=lambda a: ExpectProgressPossible(),
    ),
    _Command(
        name="statistics",
        help="the node's counters, one name<TAB>value per line",
        arguments=_nothing,
        build=lambda a: Statistics(),
    ),
    _Command(
        name="get-txid",
        help="the node's last applied transaction number",
        arguments=_nothing,
        build=lambda a: GetTxid(),
    ),
    _Command(
        name="flush-store",
        help="write the node's batched store changes to disk",
        arguments=_nothing,
        build=lambda a: FlushStore(),
    ),
    # Reads.
    _Command(
        name="get",
        help="the value of KEY",
        arguments=_get_arguments,
        build=lambda a: Get(key=_utf8(a.key), consistency=a.consistency),
    ),
    _Command(
        name="exists",
        help="whether KEY exists (true/false)",
        arguments=_key,
        build=lambda a: Exists(key=_utf8(a.key), consistency=a.consistency),
    ),
    _Command(
        name="assert",
        help="fail unless KEY holds VALUE (or is absent, without VALUE)",
        arguments=_optional_value,
        build=lambda a: Assert(
            key=_utf8(a.key), expected=_optional(a.value), consistency=a.consistency
        ),
    ),
    _Command(
        name="assert-exists",
        help="fail unless KEY exists",
        arguments=_key,
        build=lambda a: AssertExists(key=_utf8(a.key), consistency=a.consistency),
    ),
    _Command(
        name="multi-get",
        help="key<TAB>value for every KEY (fails if one is missing)",
        arguments=_keys,
        build=lambda a: MultiGet(keys=tuple(map(_utf8, a.keys)), consistency=a.consistency),
    ),
    _Command(
        name="multi-get-option",
        help="key<TAB>value for every KEY, the bare key for a missing one",
        arguments=_keys,
        build=lambda a: MultiGetOption(keys=tuple(map(_utf8, a.keys)), consistency=a.consistency),
    ),
    _Command(
        name="range",
        help="keys in a range, ascending, one per line",
        arguments=_range_arguments,
        build=lambda a: Range(**_range_fields(a)),
    ),
    _Command(
        name="range-entries",
        help="key<TAB>value in a range, ascending",
        arguments=_range_arguments,
        build=lambda a: RangeEntries(**_range_fields(a)),
    ),
    _Command(
        name="rev-range-entries",
        help="key<TAB>value in a range, descending from --first",
        arguments=lambda p: _range_arguments(p, reverse=True),
        build=lambda a: RevRangeEntries(**_range_fields(a)),
    ),
    _Command(
        name="prefix",
        help="keys starting with PREFIX, ascending",
        arguments=_prefix_arguments,
        build=lambda a: PrefixKeys(
            prefix=_utf8(a.prefix), max_keys=a.max, consistency=a.consistency
        ),
    ),
    _Command(
        name="key-count",
        help="the number of keys (asks the master)",
        arguments=_nothing,
        build=lambda a: GetKeyCount(),
    ),
    # Writes.
    _Command(
        name="set",
        help="store VALUE under KEY",
        arguments=_key_value,
        build=lambda a: Set(key=_utf8(a.key), value=_value(a)),
    ),
    _Command(
        name="confirm",
        help="set, unless KEY already holds VALUE",
        arguments=_key_value,
        build=lambda a: Confirm(key=_utf8(a.key), value=_value(a)),
    ),
    _Command(
        name="delete",
        help="remove KEY (fails if absent)",
        arguments=_key,
        build=lambda a: Delete(key=_utf8(a.key)),
    ),
    _Command(
        name="delete-prefix",
        help="remove every key starting with PREFIX; prints the count",
        arguments=_prefix_only,
        build=lambda a: DeletePrefix(prefix=_utf8(a.prefix)),
    ),
    _Command(
        name="test-and-set",
        help="set KEY to --wanted if it holds --expected; prints the value before",
        arguments=_tas_arguments,
        build=lambda a: TestAndSet(
            key=_utf8(a.key), expected=_optional(a.expected), wanted=_optional(a.wanted)
        ),
    ),
    _Command(
        name="replace",
        help="set KEY to VALUE (delete without VALUE); prints the value before",
        arguments=_optional_value,
        build=lambda a: Replace(key=_utf8(a.key), wanted=_optional(a.value)),
    ),
    _Command(
        name="sequence",
        help="apply updates atomically, e.g.: sequence set k v delete k2 assert-exists k3",
        arguments=_sequence_arguments,
        build=_build_sequence,
    ),
    _Command(
        name="user-function",
        help="run a registered user function; prints its result",
        arguments=_user_function_arguments,
        build=lambda a: UserFunction(name=a.function, argument=_optional(a.argument)),
    ),
    _Command(
        name="nop",
        help="an empty update through consensus",
        arguments=_nothing,
        build=lambda a: Nop(),
    ),
    # Administration (use --node to pick the node).
    _Command(
        name="drop-master",
        help="ask the node to give up mastership",
        arguments=_nothing,
        build=lambda a: DropMaster(),
    ),
    _Command(
        name="collapse",
        help="collapse the node's log into a head snapshot",
        arguments=_collapse_arguments,
        build=lambda a: Collapse(tlogs_to_keep=a.count),
    ),
    _Command(
        name="optimize-db",
        help="optimize the node's store (not on the master)",
        arguments=_nothing,
        build=lambda a: OptimizeDb(),
    ),
    _Command(
        name="defrag-db",
        help="defragment the node's store (not on the master)",
        arguments=_nothing,
        build=lambda a: DefragDb(),
    ),
    _Command(
        name="copy-db-to-head",
        help="copy the store to the head snapshot, prune the log",
        arguments=_copy_db_arguments,
        build=lambda a: CopyDbToHead(tlogs_to_keep=a.count),
    ),
)


def add_parser(commands: Any) -> None:
    """Add ``client`` and its subcommands to the ``parakoon`` parser's subparsers."""
    client: argparse.ArgumentParser = commands.add_parser(
        "client",
        help="run one client command against the cluster (no command: an interactive shell)",
        description=(
            "Run one client command. Keys and values are text sent as UTF-8; answers go to"
            " stdout, errors to stderr; exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4"
            " comparison failed, 5 no master or unavailable. Put -- before a key or value"
            " that starts with a dash. Without COMMAND: read commands from stdin, one per"
            " line ('help' lists them, 'quit' leaves)."
        ),
    )
    client.add_argument(
        "--config",
        default="cluster.toml",
        metavar="FILE",
        help="the cluster's configuration file (default: cluster.toml)",
    )
    add_tls_options(client)
    client.add_argument(
        "--node", metavar="NAME", help="talk to this node only (no master discovery, no retries)"
    )
    client.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document {"result": ...} (bytes: UTF-8 text or {"base64": ...})',
    )
    client.add_argument(
        "--consistency",
        type=parse_consistency,
        default=CONSISTENT,
        metavar="C",
        help="for reads: consistent (default), no-guarantees, or at-least:N",
    )
    client.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_SECS,
        metavar="SECS",
        help=f"bound on each connect, send and receive (default: {DEFAULT_TIMEOUT_SECS:g})",
    )
    client.add_argument(
        "--retry",
        type=_seconds,
        default=None,
        metavar="SECS",
        help=(
            "keep retrying transient failures (no master, node down) for this long; default"
            f" {DEFAULT_RETRY_SECS:g}, or 0 (one attempt) with --node"
        ),
    )
    # Without a command: the interactive shell (see ``shell``).
    subcommands = client.add_subparsers(dest="client_command", metavar="COMMAND", required=False)
    for command in COMMANDS:
        parser = subcommands.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(parser)
        parser.set_defaults(client_spec=command, usage_parser=parser)
    client.set_defaults(run=run, client_parser=client)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


_ESCAPES: Final = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def _text(data: bytes) -> str:
    """``data`` as one unambiguous line (see the module's output rules)."""
    text = data.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text  # the common case, no escaping needed
    out: list[str] = []
    for char in text:
        code = ord(char)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(char)
    return "".join(out)


#: What the protocol's statistics send where nothing was measured yet (min of no samples).
_UNMEASURED: Final = 1e300


def _number(value: float, path: str = "") -> str:
    """A statistics figure for people: times of day as UTC timestamps, latencies (the min,
    max and avg of an ``*_info`` timing, in seconds on the wire) in milliseconds, variances in
    three significant digits, ``-`` where nothing was measured (or NaN)."""
    if math.isnan(value) or abs(value) >= _UNMEASURED:
        return "-"
    parent, _, leaf = path.rpartition(".")
    if path in ("start", "last"):
        if value <= 0:
            return "-"
        stamp = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
        return stamp.isoformat(timespec="milliseconds")
    if parent.endswith("_info") and leaf in ("min", "max", "avg"):
        return f"{value * 1000:.3f} ms"
    if leaf in ("m2", "var"):
        return f"{value:.3g}"
    return f"{value:.3f}"


def _flatten(value: NamedValue, path: str) -> Iterator[str]:
    match value:
        case NamedList(items=items):
            for item in items:
                yield from _flatten(item, f"{path}.{item.name}" if path else item.name)
        case NamedInt(value=number) | NamedInt64(value=number):
            yield f"{path}\t{number}"
        case NamedFloat(value=number):
            yield f"{path}\t{_number(number, path)}"
        case NamedString(value=text):
            yield f"{path}\t{text}"


def _json_bytes(data: bytes | None) -> object:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _json_named(value: NamedValue) -> object:
    match value:
        case NamedList(items=items):
            return {item.name: _json_named(item) for item in items}
        case NamedFloat(value=number):
            return None if abs(number) >= _UNMEASURED else number
        case NamedInt(value=number) | NamedInt64(value=number):
            return number
        case NamedString(value=text):
            return text
        case _:
            raise AssertionError(f"unknown statistics value {value!r}")


def json_result(request: AnyRequest, result: object) -> object:
    """``result`` as JSON data (see the module's output rules)."""
    match request:
        case Range() | PrefixKeys():
            assert isinstance(result, list)
            return [_json_bytes(key) for key in result]
        case RangeEntries() | RevRangeEntries():
            assert isinstance(result, list)
            return [[_json_bytes(k), _json_bytes(v)] for k, v in result]
        case MultiGet() | MultiGetOption():
            assert isinstance(result, list)
            return [[_json_bytes(k), _json_bytes(v)] for k, v in zip(request.keys, result,
                                                                       strict=True)]  # fmt: skip
        case Version():
            assert isinstance(result, VersionInfo)
            return {"version": f"{result.major}.{result.minor}.{result.patch}",
                    "info": result.info}  # fmt: skip
        case GetTxid():
            return format_result(request, result)[0]
        case Statistics():
            assert isinstance(result, NamedList)
            return _json_named(result)
    if result is None or isinstance(result, bool | int | str):
        return result
    if isinstance(result, bytes):
        return _json_bytes(result)
    return repr(result)


def format_result(request: AnyRequest, result: object) -> list[str]:
    """The lines to print for ``result``, the answer to ``request`` (see the module's rules)."""
    match request:
        case Get() | UserFunction() | TestAndSet() | Replace():
            assert result is None or isinstance(result, bytes)
            return [] if result is None else [_text(result)]
        case Exists() | ExpectProgressPossible():
            return ["true" if result else "false"]
        case Range() | PrefixKeys():
            assert isinstance(result, list)
            return [_text(key) for key in result]
        case RangeEntries() | RevRangeEntries():
            assert isinstance(result, list)
            return [f"{_text(key)}\t{_text(value)}" for key, value in result]
        case MultiGet():
            assert isinstance(result, list)
            return [f"{_text(k)}\t{_text(v)}" for k, v in zip(request.keys, result, strict=True)]
        case MultiGetOption():
            assert isinstance(result, list)
            return [
                _text(k) if v is None else f"{_text(k)}\t{_text(v)}"
                for k, v in zip(request.keys, result, strict=True)
            ]
        case GetKeyCount() | DeletePrefix():
            return [str(result)]
        case Ping() | CurrentState():
            assert isinstance(result, str)
            return [result]
        case WhoMaster():
            assert result is None or isinstance(result, str)
            return [] if result is None else [result]
        case Version():
            assert isinstance(result, VersionInfo)
            info = result.info.rstrip("\n")
            return [f"{result.major}.{result.minor}.{result.patch}", *info.splitlines()]
        case GetTxid():
            match result:
                case AtLeast(stamp=stamp):
                    return [str(stamp)]
                case NoGuarantees():
                    return ["no-guarantees"]
                case _:
                    return ["consistent"]
        case Statistics():
            assert isinstance(result, NamedList)
            return list(_flatten(result, ""))
        case _:
            # Unit answers (set, delete, assert, sequence, nop, collapse, admin commands).
            return []


# ---------------------------------------------------------------------------------------------
# Talking to the cluster
# ---------------------------------------------------------------------------------------------


def make_client(
    cluster: ClusterConfig, *, timeout_secs: float, retry_secs: float, node: str | None
) -> Client:
    """A blocking :class:`parakoon_client.Client` for every node of ``cluster``.

    ``node`` (from ``--node``) also becomes the preferred node for relaxed reads, so that a
    ``no-guarantees`` read without ``--node`` still has a deterministic target when given one.
    """
    nodes = {n.name: (n.client_host, n.client_port) for n in cluster.nodes}
    return Client(
        cluster.cluster_id,
        nodes,
        timeout_secs=timeout_secs,
        retry_secs=retry_secs,
        preferred_node=node,
        ssl_context=client_ssl_context(cluster),
    )


def describe_error(error: ArakoonError) -> str:
    """``<ErrorName> (code 0x05): <message>`` for server errors, ``<ErrorName>: ...`` else."""
    if error.code is None:
        return f"{type(error).__name__}: {error.message}"
    return f"{type(error).__name__} (code 0x{error.code:02x}): {error.message}"


def exit_code_for(error: ArakoonError) -> int:
    """The exit code of a failed command (see the module's table)."""
    match error:
        case NotFound():
            return EXIT_NOT_FOUND
        case AssertionFailed():
            return EXIT_CHECK_FAILED
        case NotMaster() | NoLongerMaster() | ArakoonNotConnected() | GoingDown():
            return EXIT_UNAVAILABLE
    return EXIT_ERROR


def _subject(request: AnyRequest) -> str:
    """What the request was about, for the error line: ``key 'k'`` or ``prefix 'p'``."""
    for field_name in ("key", "prefix"):
        value = getattr(request, field_name, None)
        if isinstance(value, bytes):
            return f"{field_name} '{_text(value)}'"
    return ""


def _too_large(request: AnyRequest) -> str:
    """Why a value is too large for the protocol (protocol §11 rule 20), or "" if not. Said here
    because the node can only answer "unknown failure" and close, as the reference does."""
    limit = DEFAULT_LIMITS.max_value_bytes
    for field_name in ("value", "wanted"):
        value = getattr(request, field_name, None)
        if isinstance(value, bytes) and len(value) >= limit:
            return (
                f"a value of {len(value)} bytes is at or over the protocol's limit of {limit}"
                f" bytes ({limit // (1 << 20)} MiB): a node refuses it with 'unknown failure'."
                " Split it, or store it elsewhere and keep a reference here"
            )
    return ""


class WrongClusterId(Exception):
    """Every node that was reached closed the connection right after the prologue."""


def _probe(cluster: ClusterConfig, node: NodeConfig, timeout: float) -> object:
    """One node's answer to WHO_MASTER on a fresh connection: the name, ``None`` (no
    master known), an ``OSError`` (unreachable) or ``WrongClusterId`` (closed at once)."""
    try:
        with DirectConnection(cluster, node, timeout=timeout) as conn:
            return conn.call(WhoMaster())
    except ConnectionError as exc:  # closed without a byte: how a node refuses a wrong id
        if not isinstance(exc, ConnectionRefusedError | ConnectionResetError):
            return WrongClusterId(str(exc))
        return exc
    except OSError as exc:
        return exc


def _only(cluster: ClusterConfig, name: str) -> ClusterConfig:
    """``cluster`` reduced to the node ``name`` (for probing that node alone)."""
    return dataclasses.replace(cluster, nodes=(cluster.node(name),))


def _views(cluster: ClusterConfig, timeout: float) -> dict[str, object]:
    """Every node's WHO_MASTER view (see ``_probe``), asked in parallel."""
    with ThreadPoolExecutor(max_workers=len(cluster.nodes)) as pool:
        futures = {n.name: pool.submit(_probe, cluster, n, timeout) for n in cluster.nodes}
        return {name: future.result() for name, future in futures.items()}


def _describe_views(views: dict[str, object]) -> str:
    parts = []
    for name, view in views.items():
        if isinstance(view, BaseException):
            parts.append(f"{name} unreachable ({type(view).__name__})")
        else:
            parts.append(f"{name} names {view or 'no master'}")
    return "; ".join(parts)


def _check_cluster_id(cluster: ClusterConfig, views: dict[str, object], config: str) -> None:
    reached = [v for v in views.values() if not isinstance(v, OSError)]
    if reached and all(isinstance(v, WrongClusterId) for v in reached):
        raise WrongClusterId(
            f"every reachable node closed the connection right after the prologue, which is"
            f" what a node does when the cluster id is not its own: is id = "
            f"'{cluster.cluster_id}' in {config} this cluster's id?"
        )


def confirmed_master(
    views: dict[str, object], cluster: ClusterConfig, timeout: float
) -> str | None:
    """The master some node names and that names itself when asked on a fresh connection."""
    for claimed in dict.fromkeys(v for v in views.values() if isinstance(v, str)):
        if claimed not in {node.name for node in cluster.nodes}:
            continue
        if _probe(cluster, cluster.node(claimed), timeout) == claimed:
            return claimed
    return None


def _answer_without_master(args: argparse.Namespace, cluster: ClusterConfig) -> object:
    """``who-master`` and ``expect-progress-possible`` without ``--node``: ask the nodes
    themselves (each once) instead of routing to a master, so that "none" and "false" come
    back at once instead of after the retries. Raises ``ArakoonNotConnected`` when no node
    answers at all."""
    timeout = min(args.timeout, 2.0)
    views = _views(cluster, timeout)
    _check_cluster_id(cluster, views, args.config)
    if all(isinstance(v, BaseException) for v in views.values()):
        raise ArakoonNotConnected(f"no node answers: {_describe_views(views)}")
    if args.client_spec.name == "who-master":
        master = confirmed_master(views, cluster, timeout)
        if master is None:
            raise NoMasterFound(f"no master: {_describe_views(views)}")
        return master
    for node in cluster.nodes:
        if isinstance(views[node.name], BaseException):
            continue
        try:
            with DirectConnection(cluster, node, timeout=timeout) as conn:
                if conn.call(ExpectProgressPossible()) is True:
                    return True
        except OSError:
            continue
    return False


def _print(args: argparse.Namespace, request: AnyRequest, result: object, stream: TextIO) -> None:
    if getattr(args, "json", False):
        stream.write(json.dumps({"result": json_result(request, result)}) + "\n")
    elif getattr(args, "raw", False) and isinstance(result, bytes):
        stream.flush()
        stream.buffer.write(result)
        stream.buffer.flush()
        return
    else:
        for line in format_result(request, result):
            stream.write(line + "\n")
    stream.flush()


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """``parakoon client ...``; returns the exit code. ConfigError propagates (exit 2)."""
    if getattr(args, "client_spec", None) is None:
        return shell(args)
    stream = out if out is not None else sys.stdout
    cluster = load_client_config(args)
    if args.node is not None:
        cluster.node(args.node)  # an unknown name is a configuration error (exit 2)
    command: _Command = args.client_spec
    args.cluster_id = cluster.cluster_id
    try:
        request = command.build(args)
    except SequenceSyntaxError as exc:
        print(f"error: sequence: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueSourceError as exc:
        print(f"error: {command.name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    too_large = _too_large(request)
    if too_large:
        print(f"error: {command.name} {_subject(request)}: {too_large}", file=sys.stderr)
        return EXIT_ERROR
    retry_secs = args.retry
    if retry_secs is None:
        retry_secs = 0.0 if args.node is not None else DEFAULT_RETRY_SECS
    try:
        if args.node is None and command.name in ("who-master", "expect-progress-possible"):
            result: object = _answer_without_master(args, cluster)
        else:
            # A wrong cluster id can never succeed: find out before retrying for seconds.
            asked = cluster if args.node is None else _only(cluster, args.node)
            _check_cluster_id(cluster, _views(asked, min(args.timeout, 2.0)), args.config)
            client = make_client(
                cluster, timeout_secs=args.timeout, retry_secs=retry_secs, node=args.node
            )
            try:
                # Every request type fixes its own result type; here they are all printed.
                result = client.call(cast("Request[Any]", request), node=args.node)
            finally:
                client.close()
    except WrongClusterId as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ArakoonError as exc:
        parts = [command.name, _subject(request), f"(node {args.node})" if args.node else ""]
        about = " ".join(part for part in parts if part)
        print(f"error: {about}: {describe_error(exc)}", file=sys.stderr)
        return exit_code_for(exc)
    if command.name == "who-master" and result is None:
        print(f"error: who-master (node {args.node}): it knows no master", file=sys.stderr)
        return EXIT_UNAVAILABLE
    _print(args, request, result, stream)
    if isinstance(request, TestAndSet) and result != request.expected:
        print(
            f"error: test-and-set {_subject(request)}: expected "
            f"{'absent' if request.expected is None else repr(_text(request.expected))}, found "
            f"{'absent' if result is None else repr(_text(cast('bytes', result)))}; nothing set",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# The interactive shell
# ---------------------------------------------------------------------------------------------

_COMMAND_NAMES: Final = frozenset(c.name for c in COMMANDS)
SHELL_PROMPT: Final = "parakoon> "
SHELL_HISTORY_ENV: Final = "PARAKOON_HISTORY"
SHELL_HISTORY_DEFAULT: Final = "~/.parakoon_history"
SHELL_HISTORY_LINES: Final = 1000
SHELL_WORDS: Final = ("help", "quit", "exit")
EXIT_INTERRUPTED: Final = 130


def _start_history() -> Callable[[], None] | None:
    """Load the readline history and complete command names; the function that saves the
    history at the end, or None where there is no readline."""
    try:
        import readline
    except ImportError:  # pragma: no cover - every platform we run on has it
        return None
    path = os.path.expanduser(os.environ.get(SHELL_HISTORY_ENV, SHELL_HISTORY_DEFAULT))
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(SHELL_HISTORY_LINES)
    names = sorted([*(c.name for c in COMMANDS), *SHELL_WORDS])

    def complete(text: str, state: int) -> str | None:
        if readline.get_line_buffer()[: readline.get_begidx()].strip():
            return None  # only the first word is a command name
        matches = [name + " " for name in names if name.startswith(text)]
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")

    def save() -> None:
        with contextlib.suppress(OSError):
            readline.write_history_file(path)

    return save


def _shell_help(parser: argparse.ArgumentParser, words: list[str], stream: TextIO) -> int:
    """``help``: every command in one line each; ``help COMMAND``: that command's usage."""
    if words:
        return _shell_line(parser, argparse.Namespace(), [words[0], "--help"], stream)
    width = max(len(c.name) for c in COMMANDS)
    lines = [f"  {c.name:<{width}}  {c.help}" for c in COMMANDS]
    stream.write(
        "Commands (as after 'parakoon client'; options such as --node or --json may come"
        " first):\n" + "\n".join(lines) + "\n"
        f"  {'help COMMAND':<{width}}  that command's arguments\n"
        f"  {'quit':<{width}}  leave (or Ctrl-D)\n"
    )
    stream.flush()
    return EXIT_OK


def _shell_line(
    parser: argparse.ArgumentParser, defaults: argparse.Namespace, words: list[str], out: TextIO
) -> int:
    """Parse ``words`` as the arguments after ``parakoon client`` and run them; the exit code.
    Options not on the line keep the values in ``defaults`` (the shell's own command line)."""
    args = argparse.Namespace(**vars(defaults))
    try:
        args, extra = parser.parse_known_args(words, namespace=args)
        if extra:
            getattr(args, "usage_parser", parser).error(
                f"unrecognized arguments: {' '.join(extra)}"
            )
    except SystemExit as exc:  # argparse's way of ending a usage error or --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "client_spec", None) is None:
        print("error: no command on that line; 'help' lists them", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "value_file", None) == "-":
        print("error: --value-file -: stdin is the shell's own input here", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(args, out=out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def shell(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """``parakoon client`` without a command: one command per line (see the module docstring).
    Returns the last command's exit code (0 if none ran). ConfigError propagates (exit 2)."""
    stream = out if out is not None else sys.stdout
    parser: argparse.ArgumentParser = args.client_parser
    cluster = load_client_config(args)  # a bad file fails before the first prompt
    interactive = sys.stdin.isatty()
    save_history = _start_history() if interactive else None
    if interactive:
        print(
            f"parakoon client: cluster {cluster.cluster_id!r} of {args.config}; 'help' lists"
            " the commands, 'quit' or Ctrl-D leaves",
            file=stream,
            flush=True,
        )
    code = EXIT_OK
    try:
        while True:
            try:
                line = input(SHELL_PROMPT if interactive else "")
            except EOFError:
                if interactive:
                    print(file=stream)
                break
            except KeyboardInterrupt:
                print(file=stream)  # Ctrl-C at the prompt drops the line, as Python's does
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:  # an unclosed quote
                print(f"error: {exc}", file=sys.stderr)
                code = EXIT_USAGE
                continue
            if not words:
                continue
            if words[0] in ("quit", "exit"):
                break
            if words[0] == "help":
                code = _shell_help(parser, words[1:], stream)
                continue
            if not words[0].startswith("-") and words[0] not in _COMMAND_NAMES:
                print(f"error: no command {words[0]!r}; 'help' lists them", file=sys.stderr)
                code = EXIT_USAGE
                continue
            code = _shell_line(parser, args, words, stream)
    finally:
        if save_history is not None:
            save_history()
    return code
