"""The Redis port (docs/redis.md) against real clients and a real 3-node cluster.

One cluster serves the whole module (the CI budget is tight): real node processes with
``redis_port`` set, driven by ``redis-cli`` and ``redis-benchmark`` (the distribution's
redis-tools package), by redis-py, and by raw sockets for the malformed-input rules. A subset
of the commands is sent byte for byte to a real ``redis-server`` started here and to the
master, and the raw replies must be equal. The last test kills the master and checks that a
redis-py client finds the new one by the documented route. Tests that need a binary skip, and
say so, when it is missing.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import redis
from parakoon_testing import free_ports, wait_until

from parakoon_client import codec
from parakoon_client.resp import encode_command

from .conftest import ClusterProcs

pytestmark = pytest.mark.timeout(120)


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install redis-tools redis-server)")
    return path


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=2).ping())
    except redis.ConnectionError:
        return False  # not listening yet


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcs]:
    procs = ClusterProcs(tmp_path_factory.mktemp("redis"), redis=True)
    try:
        procs.start_all()
        procs.wait_master()
        yield procs
    finally:
        procs.shutdown()


def find_master(ports: list[int]) -> redis.Redis:
    """The documented route to the master (docs/redis.md): ask any node that answers for
    ``INFO replication``; ``role:master`` is the master, otherwise ``master_host`` and
    ``master_port`` name it. Returns a client of the master once it serves a write."""

    def attempt() -> redis.Redis | None:
        for port in ports:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                info = redis.Redis(port=port, socket_timeout=2).info("replication")
                if info["role"] == "master":
                    candidate = redis.Redis(port=port, socket_timeout=5)
                elif info.get("master_port"):
                    host, master_port = info["master_host"], int(info["master_port"])
                    candidate = redis.Redis(host=host, port=master_port, socket_timeout=5)
                else:
                    continue
                try:
                    candidate.set("parakoon-test:probe", "1")
                except (redis.ConnectionError, redis.ResponseError):
                    continue
                return candidate
        return None

    return wait_until(attempt, "a Redis master", timeout=30, interval=0.2)


def master_port(cluster: ClusterProcs) -> int:
    return cluster.redis_ports[cluster.wait_master()]


def raw_exchange(port: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``payload``, half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_redis_cli_sets_gets_scans_and_runs_transactions(cluster: ClusterProcs) -> None:
    cli = _need("redis-cli")
    port = str(master_port(cluster))

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [cli, "-p", port, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("set", "cli:a", "hello") == "OK\n"
    assert run("get", "cli:a") == "hello\n"
    run("mset", "cli:b", "1", "cli:c", "2")
    scanned = run("--scan", "--pattern", "cli:*").split()
    assert sorted(scanned) == ["cli:a", "cli:b", "cli:c"]
    out = run(stdin="MULTI\nINCR cli:b\nAPPEND cli:a !\nEXEC\n")
    assert out.split() == ["OK", "QUEUED", "QUEUED", "2", "6"]
    info = run("info")
    assert "role:master" in info
    assert "redis_version:" in info
    assert "db0:keys=" in info


def test_redis_benchmark_set_get_without_errors(cluster: ClusterProcs) -> None:
    bench = _need("redis-benchmark")
    port = str(master_port(cluster))
    done = subprocess.run(
        [bench, "-p", port, "-t", "set,get", "-n", "2000", "-c", "20", "-q"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.replace("\r", "\n")
    assert "SET:" in text
    assert "GET:" in text
    assert "rror" not in text + done.stderr


def test_redis_py_operations_pipelines_transactions_and_scan(cluster: ClusterProcs) -> None:
    r = redis.Redis(port=master_port(cluster), socket_timeout=10)
    assert r.ping()
    assert r.set("py:k", b"\x00\xffv") is True
    assert r.get("py:k") == b"\x00\xffv"
    assert r.set("py:k", "x", nx=True) is None
    assert r.set("py:k", "w", xx=True, get=True) == b"\x00\xffv"
    assert r.incr("py:n") == 1
    assert r.incrby("py:n", 41) == 42
    assert r.decr("py:n") == 41
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("py:k")
    assert r.append("py:k", "yz") == 3
    assert r.strlen("py:k") == 3
    assert r.exists("py:k", "py:n", "py:none", "py:k") == 3
    assert r.getdel("py:k") == b"wyz"
    assert r.delete("py:k", "py:n", "py:none") == 1
    assert r.msetnx({"py:m1": 1, "py:m2": 2}) is True
    assert r.msetnx({"py:m2": 3, "py:m3": 3}) is False
    assert r.mget("py:m1", "py:m2", "py:m3") == [b"1", b"2", None]
    assert r.type("py:m1") == b"string"
    assert sorted(r.keys("py:m[12]")) == [b"py:m1", b"py:m2"]
    with pytest.raises(redis.ResponseError, match="never expire"):
        r.expire("py:m1", 10)

    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"py:p{i:02d}", i)
    pipe.get("py:p07")
    assert pipe.execute()[-1] == b"7"
    wanted = [f"py:p{i:02d}".encode() for i in range(50)]
    assert sorted(r.scan_iter(match="py:p*", count=7)) == wanted

    # A transaction with WATCH: it commits when nobody touched the key...
    with r.pipeline() as tx:
        tx.watch("py:balance")  # type: ignore[no-untyped-call]
        balance = int(tx.get("py:balance") or 0)
        tx.multi()
        tx.set("py:balance", balance + 10)
        tx.incr("py:tx-count")
        assert tx.execute() == [True, 1]
    # ... and EXEC answers nil (WatchError) when another client changed it meanwhile.
    other = redis.Redis(port=r.connection_pool.connection_kwargs["port"])
    with r.pipeline() as tx:
        tx.watch("py:balance")  # type: ignore[no-untyped-call]
        tx.multi()
        tx.set("py:balance", 0)
        other.set("py:balance", 99)
        with pytest.raises(redis.WatchError):
            tx.execute()
    assert r.get("py:balance") == b"99"


def test_concurrent_increments_and_appends_lose_nothing(cluster: ClusterProcs) -> None:
    """INCR and APPEND are read-assert-write sequences (docs/redis.md): many clients on one
    key lose no update."""
    port = master_port(cluster)

    def work(i: int) -> None:
        r = redis.Redis(port=port, socket_timeout=10)
        for _ in range(15):
            r.incr("cc:n")
            r.append("cc:s", str(i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    r = redis.Redis(port=port, protocol=3)  # RESP3 through HELLO 3 on redis-py's side
    assert r.get("cc:n") == b"90"
    assert sorted(r.get("cc:s") or b"") == sorted(b"".join(b"%d" % i * 15 for i in range(6)))


def test_redis_and_arakoon_ports_see_the_same_bytes(cluster: ClusterProcs) -> None:
    master = cluster.wait_master()
    r = redis.Redis(port=cluster.redis_ports[master], socket_timeout=10)
    value = bytes(range(256)) * 3
    r.set(b"x:\x00bin", value)
    got = cluster.call(master, codec.Get(key=b"x:\x00bin", consistency=codec.CONSISTENT))
    assert got == value
    cluster.call(master, codec.Set(key=b"x:from-arakoon", value=b"\r\n\x00\xfe"))
    assert r.get(b"x:from-arakoon") == b"\r\n\x00\xfe"
    r.incr(b"x:counter")
    assert cluster.call(master, codec.Get(key=b"x:counter", consistency=codec.CONSISTENT)) == b"1"


def test_follower_names_the_master_and_serves_readonly_reads(cluster: ClusterProcs) -> None:
    master = cluster.wait_master()
    follower = next(n for n in cluster.names if n != master)
    redis.Redis(port=cluster.redis_ports[master]).set("f:k", "v")
    r = redis.Redis(port=cluster.redis_ports[follower], socket_timeout=5)
    with pytest.raises(redis.exceptions.ReadOnlyError) as caught:
        r.set("f:k", "w")
    assert f"127.0.0.1:{cluster.redis_ports[master]}" in str(caught.value)
    info = r.info("replication")
    assert info["role"] == "slave"
    assert int(info["master_port"]) == cluster.redis_ports[master]
    # READONLY: reads of this node's own (possibly stale) state; writes still refused.
    conn = redis.Redis(port=cluster.redis_ports[follower], single_connection_client=True)
    conn.execute_command("READONLY")  # type: ignore[no-untyped-call]
    assert wait_until(lambda: conn.get("f:k") == b"v", "the follower applied f:k", timeout=10)
    with pytest.raises(redis.exceptions.ReadOnlyError):
        conn.set("f:k", "w")


def test_malformed_input_closes_that_connection_only(cluster: ClusterProcs) -> None:
    port = master_port(cluster)
    keeper = redis.Redis(port=port, single_connection_client=True)
    assert keeper.ping()
    assert raw_exchange(port, b"*abc\r\n") == b"-ERR Protocol error: invalid multibulk length\r\n"
    huge = b"*1\r\n$999999999999\r\n"
    assert raw_exchange(port, huge) == b"-ERR Protocol error: invalid bulk length\r\n"
    too_many = b"*99999999\r\n"
    assert raw_exchange(port, too_many) == b"-ERR Protocol error: invalid multibulk length\r\n"
    assert raw_exchange(port, b"*1\r\n+x\r\n").startswith(b"-ERR Protocol error: expected '$'")
    # Answers before the bad bytes are sent, in order; the connection then closes.
    pipelined = encode_command(b"PING") + b"*1\r\n$x\r\n"
    assert raw_exchange(port, pipelined) == (
        b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    )
    assert keeper.ping()


# The commands compared byte for byte with a real redis-server: every answer must be equal.
# (KEYS and SCAN orders differ by design, DBSIZE counts other tests' keys: not compared.)
SIDE_BY_SIDE: list[tuple[bytes, ...]] = [
    (b"PING",),
    (b"PING", b"hi"),
    (b"PING", b"a", b"b"),
    (b"ECHO", b"x\r\ny"),
    (b"SELECT", b"0"),
    (b"SELECT", b"x"),
    (b"GET", b"sbs:a"),
    (b"SET", b"sbs:a", b"1"),
    (b"SET", b"sbs:a", b"2", b"NX"),
    (b"SET", b"sbs:a", b"3", b"XX", b"GET"),
    (b"SET", b"sbs:b", b"3", b"XX"),
    (b"SET", b"sbs:b", b"3", b"NX", b"XX"),
    (b"SET", b"sbs:b", b"3", b"BOGUS"),
    (b"SET", b"sbs:a"),
    (b"SETNX", b"sbs:a", b"9"),
    (b"SETNX", b"sbs:c", b"9"),
    (b"GETSET", b"sbs:c", b"10"),
    (b"GETSET", b"sbs:d", b"10"),
    (b"GETDEL", b"sbs:d"),
    (b"GETDEL", b"sbs:d"),
    (b"MSET", b"sbs:e", b"1", b"sbs:f", b"2"),
    (b"MSET", b"sbs:e"),
    (b"MGET", b"sbs:e", b"sbs:zz", b"sbs:f"),
    (b"MSETNX", b"sbs:f", b"1", b"sbs:g", b"2"),
    (b"MSETNX", b"sbs:g", b"1", b"sbs:h", b"2"),
    (b"EXISTS", b"sbs:g", b"sbs:h", b"sbs:g", b"sbs:none"),
    (b"DEL", b"sbs:g", b"sbs:h", b"sbs:none"),
    (b"UNLINK", b"sbs:e"),
    (b"APPEND", b"sbs:s", b"ab"),
    (b"APPEND", b"sbs:s", b"cd"),
    (b"STRLEN", b"sbs:s"),
    (b"STRLEN", b"sbs:none"),
    (b"INCR", b"sbs:n"),
    (b"INCRBY", b"sbs:n", b"100"),
    (b"DECR", b"sbs:n"),
    (b"DECRBY", b"sbs:n", b"-5"),
    (b"INCRBY", b"sbs:n", b"x"),
    (b"INCR", b"sbs:s"),
    (b"SET", b"sbs:big", b"9223372036854775807"),
    (b"INCR", b"sbs:big"),
    (b"SET", b"sbs:lead", b"007"),
    (b"INCR", b"sbs:lead"),
    (b"INCRBY", b"sbs:n", b"9223372036854775807"),
    (b"DECRBY", b"sbs:n", b"-9223372036854775808"),
    (b"KEYS", b"sbs:[a]"),
    (b"KEYS", b"sbs:?ea*"),
    (b"KEYS", b"sbs:\\*"),
    (b"SCAN", b"x"),
    (b"SCAN", b"0", b"COUNT", b"0"),
    (b"TYPE", b"sbs:n"),
    (b"TYPE", b"sbs:none"),
    (b"GET",),
    (b"NOSUCHCOMMAND", b"a", b"b"),
    (b"MULTI",),
    (b"INCR", b"sbs:n"),
    (b"GET", b"sbs:n"),
    (b"INCR", b"sbs:s"),
    (b"EXEC",),
    (b"EXEC",),
    (b"DISCARD",),
    (b"MULTI",),
    (b"MULTI",),
    (b"SET", b"sbs:x"),
    (b"EXEC",),
    (b"MULTI",),
    (b"SET", b"sbs:x", b"1"),
    (b"DISCARD",),
    (b"GET", b"sbs:x"),
    (b"WATCH", b"sbs:n"),
    (b"MULTI",),
    (b"GET", b"sbs:n"),
    (b"EXEC",),
    (b"MULTI",),
    (b"UNWATCH",),
    (b"WATCH", b"sbs:n"),
    (b"PING",),
    (b"EXEC",),
    (b"CLIENT", b"SETNAME", b"bad name"),
    (b"CLIENT", b"SETNAME", b"good"),
    (b"CLIENT", b"GETNAME"),
]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = _need("redis-server")
    # The side-by-side answers are those of Redis 7 (GETDEL, SET ... NX GET, error texts).
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"v=(\d+)\.", version.stdout)
    if found is None or int(found.group(1)) < 7:
        pytest.skip(f"the comparison needs redis-server 7 or newer, found: {version.stdout!r}")
    (port,) = free_ports(1)
    folder: Path = tmp_path_factory.mktemp("redis-server")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder), "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: _pings(port), "redis-server up", timeout=10, interval=0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _read_reply(stream: BinaryIO) -> bytes:
    """One whole RESP2 reply, as the raw bytes the server sent (framing read, nothing
    interpreted), so that +OK and $2 OK, or :1 and $1 1, count as different."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"connection closed mid-reply: {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"$" and int(rest) >= 0:
        return line + stream.read(int(rest) + 2)
    if kind == b"*" and int(rest) > 0:
        return line + b"".join(_read_reply(stream) for _ in range(int(rest)))
    return line


def _replies(port: int, commands: list[tuple[bytes, ...]]) -> list[bytes]:
    """Each command's raw reply, one command at a time on one connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        out = []
        for command in commands:
            sock.sendall(encode_command(*command))
            out.append(_read_reply(stream))
    return out


def test_answers_equal_a_real_redis_server(cluster: ClusterProcs, redis_server: int) -> None:
    ours = _replies(master_port(cluster), SIDE_BY_SIDE)
    theirs = _replies(redis_server, SIDE_BY_SIDE)
    differences = [
        (command, mine, real)
        for command, mine, real in zip(SIDE_BY_SIDE, ours, theirs, strict=True)
        if mine != real
    ]
    report = "\n".join(f"{c!r}: parakoon {m!r}, redis {r!r}" for c, m, r in differences)
    assert not differences, report


def test_redis_py_follows_the_master_after_it_is_killed(cluster: ClusterProcs) -> None:
    ports = [cluster.redis_ports[n] for n in cluster.names]
    r = find_master(ports)
    r.set("fo:before", "1")
    old = cluster.wait_master()
    cluster.kill(old)
    started = time.monotonic()
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        r.set("fo:after", "2")
    survivors = [cluster.redis_ports[n] for n in cluster.names if n != old]
    r = find_master(survivors)
    r.set("fo:after", "2")
    assert r.get("fo:before") == b"1"
    assert time.monotonic() - started < 30
    with r.pipeline() as tx:
        tx.watch("fo:after")  # type: ignore[no-untyped-call]
        tx.multi()
        tx.incr("fo:after")
        assert tx.execute() == [3]
    pipe = r.pipeline(transaction=False)
    pipe.set("fo:piped", "p")
    pipe.incr("fo:after")
    pipe.get("fo:piped")
    assert pipe.execute() == [True, 4, b"p"]
    assert sorted(r.scan_iter(match="fo:*")) == [b"fo:after", b"fo:before", b"fo:piped"]


def _random_commands(rng: random.Random, prefix: bytes, count: int) -> list[tuple[bytes, ...]]:
    """A random session over a few keys: the string commands with their options, numbers
    and non-numbers, and MULTI/EXEC blocks (a differential test against redis-server)."""
    keys = [prefix + k for k in (b"a", b"b", b"c", b"n")]
    values = [b"0", b"1", b"-7", b"12", b"x", b"", b"007", b"9223372036854775806"]

    def key() -> bytes:
        return rng.choice(keys)

    def value() -> bytes:
        return rng.choice(values)

    makers: list[Callable[[], tuple[bytes, ...]]] = [
        lambda: (b"GET", key()),
        lambda: (b"SET", key(), value(), *rng.sample([b"NX", b"XX", b"GET"], rng.randint(0, 2))),
        lambda: (b"SETNX", key(), value()),
        lambda: (b"GETSET", key(), value()),
        lambda: (b"GETDEL", key()),
        lambda: (b"INCR", key()),
        lambda: (b"DECR", key()),
        lambda: (b"INCRBY", key(), rng.choice([b"5", b"-3", b"x", b"9223372036854775807"])),
        lambda: (b"DECRBY", key(), rng.choice([b"2", b"-2", b"1.5"])),
        lambda: (b"APPEND", key(), value()),
        lambda: (b"STRLEN", key()),
        lambda: (b"DEL", key(), key()),
        lambda: (b"EXISTS", key(), key(), key()),
        lambda: (b"TYPE", key()),
        lambda: (b"MGET", key(), key()),
        lambda: (b"MSET", key(), value(), key(), value()),
        lambda: (b"MSETNX", key(), value(), key(), value()),
    ]
    out: list[tuple[bytes, ...]] = []
    while len(out) < count:
        if rng.random() < 0.1:
            out.append((b"MULTI",))
            out += [rng.choice(makers)() for _ in range(rng.randint(1, 4))]
            out.append(rng.choice([(b"EXEC",), (b"EXEC",), (b"DISCARD",)]))
        else:
            out.append(rng.choice(makers)())
    return out


def test_random_sessions_answer_as_redis_server_does(
    cluster: ClusterProcs, redis_server: int, seed: int
) -> None:
    rng = random.Random(seed)
    prefix = b"rnd:%d:" % seed
    commands = _random_commands(rng, prefix, 300)
    ours = _replies(master_port(cluster), commands)
    theirs = _replies(redis_server, commands)
    for i, (command, mine, real) in enumerate(zip(commands, ours, theirs, strict=True)):
        assert mine == real, (
            f"seed={seed} command {i} {command!r}: parakoon {mine!r}, redis {real!r}"
        )
