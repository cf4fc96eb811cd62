"""The cluster configuration: ``cluster.toml`` read, validated and frozen.

Theory of operation
===================

A node, the launcher and the client command all start by calling :func:`load_config`. It reads
the file with :mod:`tomllib` and checks *everything* before anything else happens: unknown keys
anywhere, missing required keys, wrong types (a TOML ``true`` is never accepted where an integer
is expected, although Python's ``bool`` is a subclass of ``int``), out-of-range values, duplicate
node names, home folders and ports, and the rules that tie keys together (a forced master must
exist and must be a voter, and so on). The first problem found stops the load with one
:class:`ConfigError` whose message names the file and the key, in the form::

    cluster.toml: nodes[1].client_port: expected an integer in 1..65535, got "x"

so the command line can print it as it is and exit without a traceback.

The checks run in file order (``[cluster]`` first, then the nodes in order, then the rules across
nodes), so the message always names the first offending key a reader meets.

What is deliberately *not* checked here: that ports are free and that the home folder is
writable. Both depend on the machine at the moment a node starts, and the launcher or a client
loading the same file must not create folders. A node calls :func:`check_home_dir` for its own
folder when it starts.

The file format is the contract of ``docs/spec/architecture.md``; every key, its default and its
meaning is listed in ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

__all__ = [
    "COMPRESSORS",
    "MASTER_MODES",
    "ClusterConfig",
    "Compressor",
    "ConfigError",
    "MasterMode",
    "NodeConfig",
    "check_home_dir",
    "default_max_client_connections",
    "load_config",
    "parse_config",
]

MasterMode = Literal["elected", "forced", "readonly"]
Compressor = Literal["zstd", "none"]
MASTER_MODES: Final[tuple[MasterMode, ...]] = ("elected", "forced", "readonly")
COMPRESSORS: Final[tuple[Compressor, ...]] = ("zstd", "none")

MiB: Final = 1024 * 1024
# The largest length the client protocol can carry: strings have an int32 length (rule 21).
INT32_MAX: Final = 2**31 - 1
PORT_MIN: Final = 1
PORT_MAX: Final = 65535
# A lease shorter than this cannot be renewed reliably over a loaded machine's scheduling jitter;
# a lease longer than this makes failover so slow that it is almost certainly a typo (ms for s).
LEASE_PERIOD_SECS_MIN: Final = 0.1
LEASE_PERIOD_SECS_MAX: Final = 60.0
# Node names travel in NOT_MASTER messages, statistics and log lines: keep them plain.
NODE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
NODE_NAME_RULE: Final = "1 to 64 characters from A-Z a-z 0-9 _ . -"

# TOML's bare keys; any other key is written quoted.
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_\-]+")
# Hosts that bind every interface: a port used on one of them clashes with that port on any host.
_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})


class ConfigError(Exception):
    """The configuration is unusable. The message names the file and the key, ready to print."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def default_max_client_connections() -> int:
    """Rule 22 of the protocol: max(soft RLIMIT_NOFILE - 200, 200).

    The 200 descriptors held back are for the WAL segments, peer connections and the metrics
    server. Where the limit is unknown or unlimited, 200 is the floor and 65536 a sane ceiling.
    """
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 200
    if soft == resource.RLIM_INFINITY or soft < 0:
        return 65536
    return max(soft - 200, 200)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """One ``[[nodes]]`` entry.

    ``home_dir`` is absolute: a relative path in the file is taken relative to the folder that
    holds the file, not to the current directory, so the same file works from anywhere.
    ``index`` is the entry's position in the file and ``source`` the file's name as the user gave
    it; both exist so that later errors (see :func:`check_home_dir`) can name the key.
    """

    name: str
    addresses: tuple[tuple[str, int], ...]
    client_port: int
    home_dir: Path
    compressor: Compressor = "zstd"
    learner: bool = False
    metrics_port: int | None = None
    redis_port: int | None = None
    """The Redis protocol (RESP) port, on ``client_host``; ``None``: not served."""
    # The metrics and health endpoint binds here, not on the client host: by default it is
    # reachable from this machine only, so it does not expose the cluster's state.
    metrics_address: str = "127.0.0.1"
    # With [cluster] tls_ca_cert: this node's certificate (it must name the node) and key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    index: int = 0
    source: str = "cluster.toml"

    @property
    def client_host(self) -> str:
        """The client port listens on the host of the first messaging address."""
        return self.addresses[0][0]

    @property
    def messaging_host(self) -> str:
        return self.addresses[0][0]

    @property
    def messaging_port(self) -> int:
        return self.addresses[0][1]

    @property
    def key(self) -> str:
        """This entry's key prefix in error messages, e.g. ``nodes[2]``."""
        return f"nodes[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """The whole file. Field names are the keys of ``[cluster]`` except ``cluster_id`` (``id``).

    Every tunable has the default documented in ``docs/configuration.md``; the comments below give
    the reason for each bound.
    """

    cluster_id: str
    nodes: tuple[NodeConfig, ...]
    master_mode: MasterMode = "elected"
    master: str | None = None
    preferred: bool = False
    lease_period_secs: float = 2.0
    fsync: bool = True
    # WAL: a segment is closed when it reaches either bound; closed segments are archived.
    segment_entries_max: int = 10_000
    segment_bytes_max: int = 64 * MiB
    # Collapse (head snapshot + pruning) once this many entries lie beyond the head snapshot,
    # keeping the newest `segments_to_keep` closed segments so lagging peers can catch up from WAL.
    collapse_threshold_entries: int = 100_000
    # ... or once the log beyond the head snapshot holds this many bytes: a few large values
    # overwritten many times fill a disk long before the entry count says so.
    collapse_threshold_bytes: int = 256 * MiB
    segments_to_keep: int = 2
    # Paxos: how many client updates, and how many bytes of them, one proposed value may hold,
    # and how many client requests may wait for a slot before new ones are refused.
    max_batch_count: int = 2_000
    max_batch_bytes: int = 8 * MiB
    max_queued_requests: int = 20_000
    # How long an idle master may hold a batch back for the clients it has just answered, so
    # that closed-loop clients share one slot instead of taking turns (docs/paxos.md, "Batch
    # linger"); at most half the slot just chosen. 0 proposes at once.
    batch_linger_secs: float = 0.01
    # Peers: outgoing messages queued per peer (a full queue drops and counts), and the largest
    # node-to-node frame accepted (protocol rule 23).
    peer_queue_items: int = 10_000
    peer_frame_bytes_max: int = 32 * MiB
    # Clients: connection limit (rule 22), value size limit (rule 20, a value of this length or
    # more is refused) and the largest request read from a client.
    max_client_connections: int = field(default_factory=default_max_client_connections)
    # Client connections that hold a slot without using it are closed: no complete prologue
    # within this time, a request whose bytes trickle in for longer than this, or (if > 0) no
    # request at all for this long. They keep silent or one-byte-per-second sockets from
    # locking real clients out.
    client_prologue_timeout_secs: float = 10.0
    client_request_timeout_secs: float = 30.0
    client_idle_timeout_secs: float = 900.0
    # Answers held for clients that have not read them yet, over all connections: at this
    # much, connections wait before answering their next request (and an answer not taken
    # within client_request_timeout_secs closes its connection).
    max_client_output_bytes: int = 256 * MiB
    # A write that has not completed for this long means the disk hangs: the node gives up the
    # mastership and refuses writes until the disk answers again.
    disk_stall_secs: float = 10.0
    # Below this much free space on the home_dir's filesystem the node refuses client writes
    # and gives up the mastership (reads go on), so that a filling disk never ends in a
    # failed log write; writes resume when space returns. 0 turns the guard off.
    disk_reserve_bytes: int = 256 * MiB
    max_value_bytes: int = 8 * MiB
    max_request_bytes: int = 64 * MiB
    # TLS (Arakoon's keys): the CA that signs every node's certificate turns TLS on for the peer
    # links; tls_service makes the client port TLS too, and tls_service_validate_peer requires
    # clients to present a certificate signed by that CA.
    tls_ca_cert: Path | None = None
    tls_service: bool = False
    tls_service_validate_peer: bool = False
    # Not keys of the file: the certificate and key a command-line client presents, from its
    # options (see parakoon_node.commands.tls_options).
    client_tls_cert: Path | None = None
    client_tls_key: Path | None = None
    # The file this was loaded from (absolute), or None if built in code.
    path: Path | None = None

    def node(self, name: str) -> NodeConfig:
        """The node called ``name``; raises :class:`ConfigError` naming the known nodes."""
        for node in self.nodes:
            if node.name == name:
                return node
        source = self.nodes[0].source if self.nodes else "cluster.toml"
        known = ", ".join(n.name for n in self.nodes)
        raise ConfigError(f"{source}: no node named {name!r} (nodes: {known})")

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    @property
    def voters(self) -> tuple[NodeConfig, ...]:
        """The nodes that vote and may become master, in file order."""
        return tuple(node for node in self.nodes if not node.learner)

    @property
    def learners(self) -> tuple[NodeConfig, ...]:
        """The nodes that follow the log but never vote, in file order."""
        return tuple(node for node in self.nodes if node.learner)

    @property
    def quorum(self) -> int:
        """A majority of the voters."""
        return len(self.voters) // 2 + 1


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate ``path``. Raises :class:`ConfigError` (and nothing else) on any problem.

    Relative ``home_dir`` values are resolved against the file's folder.
    """
    shown = os.fspath(path)
    file_path = Path(shown)
    try:
        data = file_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a folder, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text (byte offset {exc.start})") from None
    absolute = file_path.absolute()
    return parse_config(text, source=shown, base_dir=absolute.parent, path=absolute)


def parse_config(
    text: str, *, source: str, base_dir: Path, path: Path | None = None
) -> ClusterConfig:
    """Validate TOML ``text``.

    ``source`` names the text in messages, ``base_dir`` anchors relative home_dirs and ``path``
    (the file's absolute path, if any) is kept in :attr:`ClusterConfig.path`.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return _Parser(source, base_dir, path).parse(document)


RESTORE_MARKER: Final = "restore.incomplete"
"""Made first and removed last by ``parakoon restore``; a node does not start while it exists."""


def check_home_dir(node: NodeConfig) -> None:
    """Create ``node.home_dir`` if missing and check that files can be created in it.

    Called by a node when it starts (not by :func:`load_config`: loading the file for a client or
    the launcher must not create folders). Raises :class:`ConfigError` naming
    ``nodes[i].home_dir``. The check creates and removes a probe file because, as root, mode bits
    say nothing about writability and a read-only mount only shows up on an actual write.
    """
    where = f"{node.source}: {node.key}.home_dir"
    home = node.home_dir
    try:
        home.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{where}: {str(home)!r} exists and is not a folder") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{where}: cannot create folder {str(home)!r}: {reason}") from None
    if not home.is_dir():
        raise ConfigError(f"{where}: {str(home)!r} exists and is not a folder")
    probe = home / f".parakoon-write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{where}: folder {str(home)!r} is not writable: {reason}") from None
    if (home / RESTORE_MARKER).exists():
        raise ConfigError(
            f"{where}: {str(home)!r} holds an unfinished 'parakoon restore' ({RESTORE_MARKER}): "
            "run the restore again, or move the folder aside and start the node empty"
        )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

_TOP_KEYS: Final = ("cluster", "nodes")
_NODE_KEYS: Final = (
    "name",
    "addresses",
    "client_port",
    "home_dir",
    "compressor",
    "learner",
    "metrics_port",
    "redis_port",
    "metrics_address",
    "tls_cert",
    "tls_key",
)

# (key, lowest, highest) of the integer tunables of [cluster]. The lower bounds keep the node
# able to work at all (a WAL segment must hold at least one entry, a frame must hold a header and
# a small value); the upper bounds are what the wire formats can express.
_INT_TUNABLES: Final[tuple[tuple[str, int, int], ...]] = (
    ("segment_entries_max", 1, INT32_MAX),
    ("segment_bytes_max", 4096, 2**40),
    ("collapse_threshold_entries", 1, 2**62),
    ("collapse_threshold_bytes", 1 << 20, 2**62),
    ("segments_to_keep", 1, 1_000_000),
    ("max_batch_count", 1, 1_000_000),
    ("max_batch_bytes", 1, INT32_MAX),
    ("max_queued_requests", 1, 100_000_000),
    ("peer_queue_items", 1, 100_000_000),
    ("peer_frame_bytes_max", 64 * 1024, INT32_MAX),
    ("max_client_connections", 1, 10_000_000),
    ("max_client_output_bytes", 1 << 20, 2**62),
    ("max_value_bytes", 1, INT32_MAX),
    ("max_request_bytes", 1024, 2**40),
    ("disk_reserve_bytes", 0, 2**62),
)

# (key, lowest, highest) of the float tunables of [cluster] (seconds; 0 = never for the idle
# timeout).
_FLOAT_TUNABLES: Final[tuple[tuple[str, float, float], ...]] = (
    ("client_prologue_timeout_secs", 0.1, 3600.0),
    ("client_request_timeout_secs", 0.1, 3600.0),
    ("client_idle_timeout_secs", 0.0, 86400.0 * 365),
    ("disk_stall_secs", 0.5, 3600.0),
    ("batch_linger_secs", 0.0, 1.0),
)

#: The keys ``[cluster]`` accepts: the named settings, then every integer tunable.
_CLUSTER_KEYS: Final = (
    "id",
    "master_mode",
    "master",
    "preferred",
    "lease_period_secs",
    "fsync",
    "tls_ca_cert",
    "tls_service",
    "tls_service_validate_peer",
    *(key for key, _lowest, _highest in _INT_TUNABLES),
    *(key for key, _lowest, _highest in _FLOAT_TUNABLES),
)


def _show(value: object) -> str:
    """Render a TOML value the way the user wrote it, for ``got ...`` in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        if len(value) > 5:
            return "[" + ", ".join(_show(v) for v in value[:5]) + ", ...]"
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _kind(value: object) -> str:
    """The TOML type name of a value, for messages about wrong types."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


class _Parser:
    """One validation pass over a decoded TOML document; raises on the first problem."""

    def __init__(self, source: str, base_dir: Path, path: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {problem}")

    # -- generic checks ------------------------------------------------------------------------

    def check_keys(self, table: Mapping[str, object], known: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                # A key that is not a bare TOML key is shown quoted, as it would be written, so
                # that spaces, dots or control characters cannot blur or break the message.
                shown = key if _BARE_KEY_RE.fullmatch(key) else json.dumps(key)
                where = f"{prefix}.{shown}" if prefix else shown
                raise self.fail(where, f"unknown key{more}; known keys: {', '.join(known)}")

    def require(self, table: Mapping[str, object], key: str, prefix: str) -> object:
        if key not in table:
            raise self.fail(f"{prefix}.{key}", "missing required key")
        return table[key]

    def integer(self, value: object, key: str, lowest: int, highest: int) -> int:
        # bool is a subclass of int in Python, but `true` is never a port or a count.
        if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
            raise self.fail(key, f"expected an integer in {lowest}..{highest}, got {_show(value)}")
        return value

    def number(self, value: object, key: str, lowest: float, highest: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number in {lowest}..{highest}, got {_show(value)}")
        number = float(value)
        if not math.isfinite(number) or not lowest <= number <= highest:
            raise self.fail(key, f"expected a number in {lowest}..{highest}, got {_show(value)}")
        return number

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_show(value)}")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_kind(value)} ({_show(value)})")
        if not value:
            raise self.fail(key, 'expected a non-empty string, got ""')
        return value

    def choice(self, value: object, key: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            options = " or ".join(json.dumps(c) for c in choices)
            raise self.fail(key, f"expected {options}, got {_show(value)}")
        return value

    def file_path(self, value: object, key: str) -> Path:
        """A file's path; a relative one is taken relative to the configuration's folder."""
        raw = self.string(value, key)
        if "\x00" in raw:
            raise self.fail(key, "expected a path, got a string with a NUL byte")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        return Path(os.path.normpath(path))

    def table(self, value: object, key: str) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_kind(value)} ({_show(value)})")
        return cast(dict[str, object], value)

    # -- the document --------------------------------------------------------------------------

    def parse(self, document: dict[str, object]) -> ClusterConfig:
        self.check_keys(document, _TOP_KEYS, "")
        if "cluster" not in document:
            raise self.fail("cluster", "missing required table [cluster]")
        cluster = self.table(document["cluster"], "cluster")
        self.check_keys(cluster, _CLUSTER_KEYS, "cluster")

        cluster_id = self.string(self.require(cluster, "id", "cluster"), "cluster.id")
        if not cluster_id.isprintable():
            raise self.fail("cluster.id", f"expected printable text, got {_show(cluster_id)}")
        mode = cast(
            MasterMode,
            self.choice(cluster.get("master_mode", "elected"), "cluster.master_mode", MASTER_MODES),
        )
        master: str | None = None
        if "master" in cluster:
            master = self.string(cluster["master"], "cluster.master")
        preferred = self.boolean(cluster.get("preferred", False), "cluster.preferred")
        lease = self.number(
            cluster.get("lease_period_secs", 2.0),
            "cluster.lease_period_secs",
            LEASE_PERIOD_SECS_MIN,
            LEASE_PERIOD_SECS_MAX,
        )
        fsync = self.boolean(cluster.get("fsync", True), "cluster.fsync")
        tunables: dict[str, Any] = {}
        if "tls_ca_cert" in cluster:
            tunables["tls_ca_cert"] = self.file_path(cluster["tls_ca_cert"], "cluster.tls_ca_cert")
        for key in ("tls_service", "tls_service_validate_peer"):
            if key in cluster:
                tunables[key] = self.boolean(cluster[key], f"cluster.{key}")
        for key, lowest, highest in _INT_TUNABLES:
            if key in cluster:
                tunables[key] = self.integer(cluster[key], f"cluster.{key}", lowest, highest)
        for key, low, high in _FLOAT_TUNABLES:
            if key in cluster:
                tunables[key] = self.number(cluster[key], f"cluster.{key}", low, high)

        if "nodes" not in document:
            raise self.fail("nodes", "missing required [[nodes]] entries (at least one node)")
        raw_nodes = document["nodes"]
        if not isinstance(raw_nodes, list):
            raise self.fail("nodes", f"expected [[nodes]] tables, got {_kind(raw_nodes)}")
        if not raw_nodes:
            raise self.fail("nodes", "expected at least one [[nodes]] entry")
        nodes = tuple(self.parse_node(raw, index) for index, raw in enumerate(raw_nodes))
        config = ClusterConfig(
            cluster_id=cluster_id,
            nodes=nodes,
            master_mode=mode,
            master=master,
            preferred=preferred,
            lease_period_secs=lease,
            fsync=fsync,
            path=self.path,
            **tunables,
        )
        self.check_nodes(config)
        self.check_master(config)
        self.check_tunables(config)
        self.check_tls(config)
        return config

    def parse_node(self, raw: object, index: int) -> NodeConfig:
        prefix = f"nodes[{index}]"
        node = self.table(raw, prefix)
        self.check_keys(node, _NODE_KEYS, prefix)

        name = self.string(self.require(node, "name", prefix), f"{prefix}.name")
        if NODE_NAME_RE.fullmatch(name) is None:
            raise self.fail(f"{prefix}.name", f"expected {NODE_NAME_RULE}, got {_show(name)}")

        raw_addresses = self.require(node, "addresses", prefix)
        key = f"{prefix}.addresses"
        if not isinstance(raw_addresses, list) or not raw_addresses:
            expected = 'expected a non-empty array of "host:port" strings'
            raise self.fail(key, f"{expected}, got {_show(raw_addresses)}")
        addresses = tuple(self.address(item, f"{key}[{i}]") for i, item in enumerate(raw_addresses))

        client_port = self.integer(
            self.require(node, "client_port", prefix), f"{prefix}.client_port", PORT_MIN, PORT_MAX
        )
        raw_home = self.string(self.require(node, "home_dir", prefix), f"{prefix}.home_dir")
        if "\x00" in raw_home:
            raise self.fail(f"{prefix}.home_dir", "expected a path, got a string with a NUL byte")
        home = Path(raw_home).expanduser()
        if not home.is_absolute():
            home = self.base_dir / home
        home = Path(os.path.normpath(home))

        compressor = cast(
            Compressor,
            self.choice(node.get("compressor", "zstd"), f"{prefix}.compressor", COMPRESSORS),
        )
        learner = self.boolean(node.get("learner", False), f"{prefix}.learner")
        metrics_port: int | None = None
        if "metrics_port" in node:
            metrics_port = self.integer(
                node["metrics_port"], f"{prefix}.metrics_port", PORT_MIN, PORT_MAX
            )
        redis_port: int | None = None
        if "redis_port" in node:
            redis_port = self.integer(
                node["redis_port"], f"{prefix}.redis_port", PORT_MIN, PORT_MAX
            )
        metrics_address = "127.0.0.1"
        if "metrics_address" in node:
            key = f"{prefix}.metrics_address"
            metrics_address = self.string(node["metrics_address"], key)
            if not metrics_address.isprintable() or any(c in metrics_address for c in " []/"):
                raise self.fail(
                    key,
                    'expected a host or IP address such as "127.0.0.1", "::1" or "0.0.0.0",'
                    f" got {_show(metrics_address)}",
                )
        tls_cert = tls_key = None
        if "tls_cert" in node:
            tls_cert = self.file_path(node["tls_cert"], f"{prefix}.tls_cert")
        if "tls_key" in node:
            tls_key = self.file_path(node["tls_key"], f"{prefix}.tls_key")
        return NodeConfig(
            name=name,
            addresses=addresses,
            client_port=client_port,
            home_dir=home,
            compressor=compressor,
            learner=learner,
            metrics_port=metrics_port,
            redis_port=redis_port,
            metrics_address=metrics_address,
            tls_cert=tls_cert,
            tls_key=tls_key,
            index=index,
            source=self.source,
        )

    def address(self, value: object, key: str) -> tuple[str, int]:
        """Parse ``"host:port"`` (an IPv6 host in brackets: ``"[::1]:4010"``)."""
        expected = 'expected "host:port" with a port in 1..65535'
        if not isinstance(value, str):
            raise self.fail(key, f"{expected}, got {_show(value)}")
        host, sep, port_text = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            hint = 'write IPv6 hosts in brackets: "[::1]:4010"'
            raise self.fail(key, f"{expected} ({hint}), got {_show(value)}")
        if not sep or not host or not port_text.isdigit() or not host.isprintable():
            raise self.fail(key, f"{expected}, got {_show(value)}")
        port = int(port_text)
        if not PORT_MIN <= port <= PORT_MAX:
            raise self.fail(key, f"{expected}, got {_show(value)}")
        return host, port

    # -- rules across keys ---------------------------------------------------------------------

    def check_nodes(self, config: ClusterConfig) -> None:
        names: dict[str, int] = {}
        homes: dict[Path, int] = {}
        # (host, port) -> the key that first used it; messaging, client and metrics ports together.
        ports: dict[tuple[str, int], str] = {}

        def claim(host: str, port: int, key: str) -> None:
            for (other_host, other_port), other_key in ports.items():
                same_host = (
                    host == other_host or host in _WILDCARD_HOSTS or other_host in _WILDCARD_HOSTS
                )
                if same_host and port == other_port:
                    raise self.fail(
                        key, f"port {port} on host {host!r} is already used by {other_key}"
                    )
            ports[(host, port)] = key

        for node in config.nodes:
            prefix = node.key
            if node.name in names:
                raise self.fail(
                    f"{prefix}.name",
                    f"duplicate node name {node.name!r} (also nodes[{names[node.name]}].name)",
                )
            names[node.name] = node.index
            if node.home_dir in homes:
                raise self.fail(
                    f"{prefix}.home_dir",
                    f"folder {str(node.home_dir)!r} is also nodes[{homes[node.home_dir]}].home_dir;"
                    " every node needs its own",
                )
            homes[node.home_dir] = node.index
            for i, (host, port) in enumerate(node.addresses):
                claim(host, port, f"{prefix}.addresses[{i}]")
            claim(node.client_host, node.client_port, f"{prefix}.client_port")
            if node.metrics_port is not None:
                # A loopback or wildcard metrics address is on the node's own machine, which
                # the other keys know by its client host.
                local = node.metrics_address in _WILDCARD_HOSTS or node.metrics_address in (
                    "127.0.0.1",
                    "::1",
                    "localhost",
                )
                host = node.client_host if local else node.metrics_address
                claim(host, node.metrics_port, f"{prefix}.metrics_port")
            if node.redis_port is not None:
                claim(node.client_host, node.redis_port, f"{prefix}.redis_port")
        if not config.voters:
            raise self.fail("nodes", "no voters: at least one node must have learner = false")

    def check_master(self, config: ClusterConfig) -> None:
        mode = config.master_mode
        master = config.master
        if mode == "forced" and master is None:
            raise self.fail("cluster.master", 'missing: master_mode = "forced" needs master = NAME')
        if config.preferred and mode != "elected":
            raise self.fail(
                "cluster.preferred", f'only meaningful with master_mode = "elected", not "{mode}"'
            )
        if config.preferred and master is None:
            raise self.fail("cluster.master", "missing: preferred = true needs master = NAME")
        if master is None:
            return
        if mode == "readonly":
            raise self.fail("cluster.master", 'not allowed with master_mode = "readonly"')
        if mode == "elected" and not config.preferred:
            raise self.fail(
                "cluster.master",
                'only meaningful with master_mode = "forced" or preferred = true;'
                " remove it or add one of those",
            )
        if master not in config.node_names:
            known = ", ".join(config.node_names)
            raise self.fail("cluster.master", f"no node named {master!r} (nodes: {known})")
        if config.node(master).learner:
            raise self.fail("cluster.master", f"node {master!r} is a learner and cannot be master")

    def check_tunables(self, config: ClusterConfig) -> None:
        if config.max_batch_bytes > config.peer_frame_bytes_max:
            raise self.fail(
                "cluster.max_batch_bytes",
                f"{config.max_batch_bytes} is larger than peer_frame_bytes_max"
                f" ({config.peer_frame_bytes_max}): a full batch could never be sent to a peer",
            )
        if config.batch_linger_secs >= config.lease_period_secs / 8:
            raise self.fail(
                "cluster.batch_linger_secs",
                f"{config.batch_linger_secs} is not below lease_period_secs / 8"
                f" ({config.lease_period_secs / 8}): a held batch would eat into the lease",
            )
        if config.max_value_bytes > config.max_request_bytes:
            raise self.fail(
                "cluster.max_value_bytes",
                f"{config.max_value_bytes} is larger than max_request_bytes"
                f" ({config.max_request_bytes}): such a value could never arrive",
            )

    def check_tls(self, config: ClusterConfig) -> None:
        """The TLS keys fit together. Whether the files can be used is checked by the node that
        uses them, when it starts (``runtime.tls.check_tls_files``): a client or the launcher
        loading this file need not be able to read every node's key."""
        if config.tls_service and config.tls_ca_cert is None:
            raise self.fail(
                "cluster.tls_service", "needs cluster.tls_ca_cert (the CA of the certificates)"
            )
        if config.tls_service_validate_peer and not config.tls_service:
            raise self.fail(
                "cluster.tls_service_validate_peer",
                "only meaningful with tls_service = true (clients use TLS)",
            )
        for node in config.nodes:
            prefix = node.key
            if config.tls_ca_cert is None:
                for key, value in (("tls_cert", node.tls_cert), ("tls_key", node.tls_key)):
                    if value is not None:
                        raise self.fail(
                            f"{prefix}.{key}",
                            "only meaningful with cluster.tls_ca_cert (which turns TLS on);"
                            " add it or remove this key",
                        )
                continue
            # A node's own certificate is required when that node starts (runtime.tls): a
            # file written by `parakoon join` does not know where the others keep theirs.
            if node.tls_cert is None and node.tls_key is not None:
                raise self.fail(
                    f"{prefix}.tls_cert", "missing: tls_key is set but not its certificate"
                )
            if node.tls_cert is not None and node.tls_key is None:
                raise self.fail(
                    f"{prefix}.tls_key", "missing: tls_cert is set but not its private key"
                )
