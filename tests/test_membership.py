"""Online membership change on real processes (issue "Online membership change").

Each test starts its own cluster on free ports of 127.0.0.1 and changes its membership with
``parakoon member`` while it runs: a node is added as a learner, started with the lines the
command printed, promoted once it has caught up; any node can be removed, the master
included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from parakoon_testing import free_ports, holds_for, wait_until

from parakoon_client import codec

from .conftest import CLUSTER_ID, ClusterProcs


def member(
    cluster: ClusterProcs, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``parakoon member ...`` against ``cluster``'s file, as an operator runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "member", *args, "--config", str(cluster.config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cluster.config.parent,
    )
    if check:
        assert proc.returncode == 0, (
            f"member {args}: rc {proc.returncode}\n{proc.stderr}\n{cluster.tail_logs()}"
        )
    return proc


def members(cluster: ClusterProcs) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(member(cluster, "list", "--json").stdout)
    return out


def add_node(cluster: ClusterProcs, name: str) -> None:
    """``member add``, then append the printed lines to the file and start the node."""
    client, peer = free_ports(2)
    proc = member(
        cluster, "add", name, "--address", f"127.0.0.1:{peer}", "--client-port", str(client)
    )
    lines = proc.stdout[proc.stdout.index("[[nodes]]") :]
    assert f'name = "{name}"' in lines and "learner = true" in lines
    cluster.names.append(name)
    cluster.client_ports[name] = client
    cluster.peer_ports[name] = peer
    with open(cluster.config, "a") as f:
        f.write("\n" + lines)
    cluster.start(name)
    cluster.wait_ready(name, timeout=30)


def test_grow_a_cluster_by_one_voter(cluster_factory: Any) -> None:
    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"before", value=b"1"))
    add_node(cluster, "node_3")
    listed = members(cluster)
    assert listed["learners"] == ["node_3"] and len(listed["voters"]) == 3
    member(cluster, "promote", "node_3", "--wait", "60")
    listed = members(cluster)
    assert listed["voters"] == ["node_0", "node_1", "node_2", "node_3"]
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"after", value=b"2"))
    cluster.wait_same_store()
    assert cluster.store_of("node_3")[b"before"] == b"1"
    # parakoon status shows the added member, from the replicated membership.
    proc = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "status", "--config", str(cluster.config),
         "--json"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    status = json.loads(proc.stdout)
    rows = {n["name"]: n for n in status["nodes"]}
    assert rows["node_3"]["voter"] and rows["node_3"]["reachable"], rows["node_3"]
    assert status["quorum"] and status["master"] is not None, status


def test_a_node_with_a_stale_file_runs_under_the_replicated_membership(
    cluster_factory: Any,
) -> None:
    """A node restarted with the cluster.toml from before a change learns the membership in
    force (from its own log here), says so in its log, and keeps serving."""
    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    stale = cluster.config.read_text()
    cluster.start_all()
    cluster.wait_master()
    add_node(cluster, "node_3")
    member(cluster, "promote", "node_3", "--wait", "60")
    victim = next(n for n in ("node_0", "node_1", "node_2") if n != cluster.wait_master())
    cluster.kill(victim)
    old_file = cluster.base / "stale.toml"
    old_file.write_text(stale)
    log = open(cluster.log_dir / f"{victim}.log", "ab")  # noqa: SIM115 - owned by the process
    cluster.procs[victim] = subprocess.Popen(
        [sys.executable, "-m", "parakoon_node", "node", "--config", str(old_file), "--node",
         victim, "--log-format", "json"],
        stdout=log, stderr=subprocess.STDOUT, cwd=cluster.base,
    )  # fmt: skip
    log.close()
    cluster.wait_ready(victim)
    text = (cluster.log_dir / f"{victim}.log").read_text()
    assert '"membership.in_force"' in text and '"cluster_toml_differs": true' in text
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"after", value=b"1"))
    wait_until(
        lambda: (
            cluster.call(victim, codec.Get(key=b"after", consistency=codec.NO_GUARANTEES)) == b"1"
        ),
        f"{victim} follows with its stale file",
        timeout=20,
    )


def test_a_learner_serves_dirty_reads_and_never_counts_until_promoted(cluster_factory: Any) -> None:
    """Acceptance: a learner added with ``member add`` serves no-guarantees reads and is not
    part of any quorum until promoted: with two of the three voters down, the learner does
    not make a majority, so nothing is written; once promoted (4 voters) it does count."""
    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"k", value=b"v1"))
    add_node(cluster, "node_3")
    # It follows the log: a no-guarantees read there sees the write.
    wait_until(
        lambda: (
            cluster.call("node_3", codec.Get(key=b"k", consistency=codec.NO_GUARANTEES)) == b"v1"
        ),
        "the learner serves the write with no guarantees",
        timeout=20,
    )
    # It has rebuilt (it acknowledges from now on): before killing voters, since a rebuild
    # needs an answer from every voter.
    wait_until(
        lambda: not str(cluster.call("node_3", codec.CurrentState())).startswith("Rebuilding"),
        "node_3 rebuilt",
        timeout=30,
    )
    # A consistent read or a write on the learner is refused with NOT_MASTER.
    answer = cluster.call("node_3", codec.Get(key=b"k"))
    assert isinstance(answer, codec.ErrorResponse) and answer.code == codec.ErrorCode.NOT_MASTER
    # Two voters down: the remaining voter plus the learner are not a quorum of 3 voters.
    others = [n for n in ("node_0", "node_1", "node_2") if n != master]
    cluster.kill(others[0])
    cluster.kill(master)
    alive = others[1]
    holds_for(
        3 * cluster.lease,  # longer than any election needs
        # (Until its lease view runs out a node may still name the master that was killed.)
        lambda: {cluster.who_master(alive), cluster.who_master("node_3")} <= {None, master},
        "no new master from one voter and a learner",
    )
    # Two voters up again, and promote: four voters of which three are up (the third one
    # being the former learner), a quorum of 3: the write goes through only because it counts.
    cluster.start(master)
    cluster.wait_master(among=[master, alive], timeout=30)
    member(cluster, "promote", "node_3", "--wait", "60")
    assert not cluster.running(others[0])
    leader = cluster.wait_master(among=[master, alive, "node_3"], timeout=30)
    assert cluster.call(leader, codec.Set(key=b"k", value=b"v2")) is None


def test_a_removed_node_says_so_and_clients_go_elsewhere(cluster_factory: Any) -> None:
    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"k", value=b"v"))
    victim = next(n for n in cluster.names if n != master)
    listed = json.loads(member(cluster, "remove", victim, "--json").stdout)
    assert victim not in listed["voters"]
    wait_until(lambda: cluster.who_master(victim) is None, f"{victim} names no master", timeout=10)
    dirty = cluster.call(victim, codec.Get(key=b"k", consistency=codec.NO_GUARANTEES))
    assert isinstance(dirty, codec.ErrorResponse) and b"removed from the cluster" in dirty.message
    write = cluster.call(victim, codec.Set(key=b"k", value=b"w"))
    assert isinstance(write, codec.ErrorResponse) and write.code == codec.ErrorCode.NOT_MASTER
    # Two voters remain, and write on.
    assert cluster.call(cluster.wait_master(among=[n for n in cluster.names if n != victim]),
                        codec.Set(key=b"k", value=b"w")) is None  # fmt: skip
    log = (cluster.log_dir / f"{victim}.log").read_text()
    assert "no longer a member" in log


def test_member_cli_refuses_what_makes_no_sense(cluster_factory: Any) -> None:
    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    cluster.start_all()
    cluster.wait_master()
    proc = member(cluster, "promote", "node_1", "--wait", "0", check=False)
    assert proc.returncode == 1 and "cannot promote 'node_1'" in proc.stderr, proc.stderr
    proc = member(cluster, "remove", "nobody", "--wait", "0", check=False)
    assert proc.returncode == 1 and "cannot remove 'nobody'" in proc.stderr, proc.stderr
    proc = member(cluster, "add", "x", "--address", "nope", "--client-port", "1", check=False)
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr
    listed = json.loads(member(cluster, "list", "--json").stdout)
    assert listed["voters"] == ["node_0", "node_1", "node_2"] and not listed["replicated"]


def test_the_client_library_changes_members_and_finds_new_ones(cluster_factory: Any) -> None:
    from parakoon_client import BadInput, Client

    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    nodes = {n: ("127.0.0.1", cluster.client_ports[n]) for n in cluster.names}
    client = Client(CLUSTER_ID, nodes, timeout_secs=10.0)
    try:
        client_port, peer_port = free_ports(2)
        added = client.member_add(
            "node_3", host="127.0.0.1", messaging_port=peer_port, client_port=client_port
        )
        assert added.learners == ("node_3",) and added.addresses["node_3"][1] == client_port
        assert "node_3" in client.nodes  # learnt from the answer
        cluster.names.append("node_3")
        cluster.client_ports["node_3"] = client_port
        cluster.peer_ports["node_3"] = peer_port
        with open(cluster.config, "a") as f:
            f.write(
                f'\n[[nodes]]\nname = "node_3"\naddresses = ["127.0.0.1:{peer_port}"]\n'
                f'client_port = {client_port}\nhome_dir = "data/node_3"\nlearner = true\n'
            )
        cluster.start("node_3")

        def promoted() -> bool:
            try:
                client.member_promote("node_3")
            except BadInput as exc:
                assert "has not caught up" in str(exc), exc
                return False
            return True

        wait_until(promoted, "node_3 promoted", timeout=60, interval=0.3)
        # A client that knows one follower only learns the others when it looks for the master.
        follower = next(n for n in ("node_0", "node_1", "node_2") if n != master)
        narrow = Client(CLUSTER_ID, {follower: nodes[follower]}, timeout_secs=10.0)
        try:
            narrow.set(b"k", b"v")
            assert set(narrow.nodes) == {"node_0", "node_1", "node_2", "node_3"}
        finally:
            narrow.close()
        removed = client.member_remove(follower)
        assert follower not in removed.voters and follower not in client.nodes
        assert client.members().voters == tuple(
            sorted(n for n in ("node_0", "node_1", "node_2", "node_3") if n != follower)
        )
        client.set(b"k", b"w")
    finally:
        client.close()


def test_a_node_joins_with_one_members_address(cluster_factory: Any) -> None:
    """``parakoon join``: the new node knows its own name and addresses and one member's client
    address; it gets the cluster's settings and membership from it, is added as a learner,
    writes its own cluster.toml and runs; promoted, it votes."""
    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"k", value=b"v"))
    client_port, peer_port = free_ports(2)
    own = cluster.base / "node_3.toml"
    log = open(cluster.log_dir / "node_3.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "parakoon_node", "join", "node_3",
         "--member", f"127.0.0.1:{cluster.client_ports['node_1']}", "--cluster-id", CLUSTER_ID,
         "--address", f"127.0.0.1:{peer_port}", "--client-port", str(client_port),
         "--config", str(own)],
        stdout=log, stderr=subprocess.STDOUT, cwd=cluster.base,
    )  # fmt: skip
    log.close()
    cluster.procs["node_3"] = proc
    cluster.names.append("node_3")
    cluster.client_ports["node_3"] = client_port
    cluster.wait_ready("node_3", timeout=30)
    text = own.read_text()
    assert 'id = "' + CLUSTER_ID + '"' in text and "lease_period_secs = 1.0" in text
    assert (cluster.base / "data" / "node_3").is_dir()
    member(cluster, "promote", "node_3", "--wait", "60")
    assert json.loads(member(cluster, "list", "--json").stdout)["voters"] == [
        "node_0", "node_1", "node_2", "node_3",
    ]  # fmt: skip
    wait_until(
        lambda: (
            cluster.call("node_3", codec.Get(key=b"k", consistency=codec.NO_GUARANTEES)) == b"v"
        ),
        "the joined node holds the data",
        timeout=20,
    )
    # A voter now: with one of the first three down, it is the third of four voters up.
    victim = next(n for n in ("node_0", "node_1", "node_2") if n != master)
    cluster.kill(victim)
    leader = cluster.wait_master(among=[n for n in cluster.names if n != victim], timeout=30)
    assert cluster.call(leader, codec.Set(key=b"k", value=b"w")) is None
