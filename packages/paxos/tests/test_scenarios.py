"""Scenario scripts: hand-driven clusters of real cores with their expected traces.

Each ``testdata/*.txt`` file is a script in the style of etcd raft's ``interaction_test``: lines
starting with ``> `` are commands, the lines after a command are the trace it must print, and
``#`` lines are comments. ``PARAKOON_REWRITE=1`` rewrites the expected traces from the actual
ones (review the diff before committing).

The interpreter models just enough of a driver: a FIFO network per run, each node's disk (log,
promised ballot, store), writes that become durable only on ``persist`` (messages that followed a
write in the same effect list are held until then, as the effect contract requires), ``Apply``
written to the store at once and answered on ``apply``, and catch-up copying chosen slots from
the source's disk.

Commands::

    cluster n0,n1,n2 [lease=2.0] [learners=l0] [mode=elected|forced|readonly] [master=n0]
            [preferred]                              create and start the nodes (empty disks)
    time +D | time T                                 advance the shared clock
    tick [NODES]                                     a Tick for the nodes (default: all up)
    deliver [SRC->DST]                               deliver queued messages (filter: * allowed)
    drop [SRC->DST]                                  drop queued messages
    persist [NODES]                                  make pending writes durable, answer them
    apply [NODES]                                    answer pending Apply with Applied
    catchup [NODES]                                  run pending catch-ups
    client NODE RID:PAYLOAD ...                      a ClientBatch
    dropmaster NODE RID                              a DropMaster
    crash NODE                                       lose volatile state; pending writes are torn
    restart NODE                                     restart from what is durable
    isolate NODE | heal                              drop every message to/from NODE; undo
    stabilize [NODES]                                persist/apply/catchup/deliver until quiet
    state [NODES]                                    print role, ballot, slots, master
    log [NODES]                                      print the durable log and the store
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parakoon_paxos import (
    Accept,
    Accepted,
    Applied,
    Apply,
    Batch,
    Broadcast,
    CatchupDone,
    CatchupFailed,
    ClientBatch,
    ClientRequest,
    Commit,
    Config,
    DropMaster,
    Effect,
    Event,
    Fail,
    LogEntry,
    MasterMode,
    MasterSet,
    Membership,
    Message,
    Nak,
    Persist,
    Persisted,
    PersistPromise,
    Prepare,
    PreVote,
    PreVoteOk,
    Promise,
    Rebuilt,
    Receive,
    Recovered,
    Reply,
    RoleChanged,
    Send,
    StartCatchup,
    State,
    Tick,
    Value,
    applied_i,
    check_invariants,
    initial_state,
    lease_valid,
    master,
    role,
    step,
)
from parakoon_paxos.contract import NOW, stage

TESTDATA = Path(__file__).parent / "testdata"
MAX_STABILIZE_ROUNDS = 1000


def fmt_value(v: Value) -> str:
    if isinstance(v, MasterSet):
        return f"MasterSet({v.node})"
    if isinstance(v, Membership):
        return f"Membership({','.join(v.voters)};{','.join(v.learners)})"
    if not v.payloads:
        return "Nop"
    body = ",".join(p.decode() for p in v.payloads)
    return f"Batch({body}{';sync' if v.sync else ''})"


def fmt_entry(e: LogEntry | None) -> str:
    return "-" if e is None else f"{e.i}@{e.n}:{fmt_value(e.value)}"


def fmt_msg(m: Message) -> str:
    match m:
        case Prepare(n=n, i=i):
            return f"Prepare n={n} i={i}"
        case Promise(n=n, i=i, accepted=acc):
            return f"Promise n={n} i={i} acc={fmt_entry(acc)}"
        case Nak(n=n, their_n=tn, their_i=ti):
            return f"Nak n={n} their_n={tn} their_i={ti}"
        case Accept(n=n, i=i, value=v):
            return f"Accept n={n} i={i} {fmt_value(v)}"
        case Accepted(n=n, i=i):
            return f"Accepted n={n} i={i}"
        case Commit(n=n, i=i):
            return f"Commit n={n} i={i}"
        case PreVote(n=n, i=i):
            return f"PreVote n={n} i={i}"
        case PreVoteOk(n=n, i=i):
            return f"PreVoteOk n={n} i={i}"
    raise AssertionError(m)


def fmt_effect(e: Effect) -> str:
    match e:
        case Send(to=to, msg=msg):
            return f"Send {to} {fmt_msg(msg)}"
        case Broadcast(msg=msg):
            return f"Broadcast {fmt_msg(msg)}"
        case Persist(entry=entry, sync=sync):
            return f"Persist {fmt_entry(entry)}{' sync' if sync else ''}"
        case PersistPromise(n=n):
            return f"PersistPromise {n}"
        case Apply(i=i, value=v):
            return f"Apply {i} {fmt_value(v)}"
        case Reply(rid=rid, result=result):
            return f"Reply {rid} {result!r}"
        case Fail(rid=rid, code=code):
            return f"Fail {rid} {code.name}"
        case StartCatchup(source=source, from_i=from_i):
            return f"StartCatchup {source} from={from_i}"
        case RoleChanged(role=r, n=n, master=m):
            return f"RoleChanged {r.value} n={n} master={m or '-'}"
    raise AssertionError(e)


@dataclass
class Write:
    entry: LogEntry | None  # None: a promise write
    promise: int = 0
    held: list[tuple[str, str, Message]] = field(default_factory=list)


@dataclass
class SimNode:
    name: str
    config: Config
    state: State | None = None
    log: dict[int, LogEntry] = field(default_factory=dict)
    last_i: int = -1
    promised: int = 0
    store: list[Value] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    applies: list[Applied] = field(default_factory=list)
    catchups: list[str] = field(default_factory=list)


class Cluster:
    def __init__(self, out: list[str]) -> None:
        self.out = out
        self.nodes: dict[str, SimNode] = {}
        self.net: list[tuple[str, str, Message]] = []
        self.now = 0.0
        self.seed = 0
        self.isolated: set[str] = set()
        # Global knowledge for the safety checks (as in parakoon_sim, in miniature): (i, n) is
        # chosen once a quorum of voters has it durable.
        self.accepts: dict[tuple[int, int], tuple[Value, set[str]]] = {}
        self.chosen: dict[int, Value] = {}
        self.payloads: dict[int, bytes] = {}

    # --- stepping ---

    def step(self, node: SimNode, event: Event) -> None:
        assert node.state is not None, f"{node.name} is down"
        node.state, effects = step(node.config, node.state, event, self.now)
        check_invariants(node.config, node.state)
        writes: list[Write] = []  # this list's writes; held messages wait for one of them
        for staged in stage(effects):
            eff = staged.effect
            current = None if staged.after == NOW else writes[staged.after]
            self.out.append(f"{node.name}: {fmt_effect(eff)}")
            match eff:
                case Send(to=to, msg=msg):
                    self._send(node, current, [to], msg)
                case Broadcast(msg=msg):
                    targets = (
                        node.config.peers
                        if isinstance(msg, Accept | Commit)
                        else node.config.other_voters
                    )
                    self._send(node, current, list(targets), msg)
                case Persist(entry=entry):
                    writes.append(Write(entry=entry))
                    node.writes.append(writes[-1])
                case PersistPromise(n=n):
                    writes.append(Write(entry=None, promise=n))
                    node.writes.append(writes[-1])
                case Rebuilt():
                    writes.append(Write(entry=None))  # the voter mark: nothing to replay
                    node.writes.append(writes[-1])
                case Apply(i=i, value=v):
                    assert i == len(node.store), f"{node.name}: Apply {i} out of order"
                    assert self.chosen.get(i) == v, f"{node.name}: Apply {i} {v} not chosen"
                    node.store.append(v)
                    results = tuple(len(p) for p in v.payloads) if isinstance(v, Batch) else ()
                    node.applies.append(Applied(i=i, results=results))
                case StartCatchup(source=source):
                    node.catchups.append(source)
                case Reply(rid=rid):
                    if rid in self.payloads:  # S9: acknowledged only once chosen
                        chosen = [v for v in self.chosen.values() if isinstance(v, Batch)]
                        assert any(self.payloads[rid] in v.payloads for v in chosen), rid
                case Fail() | RoleChanged():
                    pass
        leases = [
            n.name
            for n in self.nodes.values()
            if n.state is not None and lease_valid(n.config, n.state, self.now)
        ]
        assert len(leases) <= 1, f"S7: {leases} all hold the lease"

    def _send(self, node: SimNode, write: Write | None, to: list[str], msg: Message) -> None:
        for dst in to:
            if write is None:
                self.net.append((node.name, dst, msg))
            else:
                write.held.append((node.name, dst, msg))

    def _match(self, pattern: str | None, src: str, dst: str) -> bool:
        if pattern is None:
            return True
        a, _, b = pattern.partition("->")
        return a in ("*", src) and b in ("*", dst)

    # --- commands ---

    def cmd_cluster(self, args: list[str]) -> None:
        voters = tuple(args[0].split(","))
        opts = dict(a.split("=", 1) if "=" in a else (a, "1") for a in args[1:])  # type: ignore[misc]  # split() gives a list, the pair is a tuple
        learners = tuple(opts["learners"].split(",")) if "learners" in opts else ()
        for name in voters + learners:
            config = Config(
                me=name,
                voters=voters,
                learners=learners,
                lease_period=float(opts.get("lease", "2.0")),
                master_mode=MasterMode(opts.get("mode", "elected")),
                master=opts.get("master"),
                preferred="preferred" in opts,
                max_batch_count=int(opts.get("batch", "1000")),
            )
            self.nodes[name] = SimNode(name=name, config=config)
            self._start(self.nodes[name])

    def _start(self, node: SimNode) -> None:
        upto = node.last_i if len(node.config.voters) == 1 else node.last_i - 1
        node.store = [node.log[i].value for i in range(upto + 1)]
        rec = Recovered(
            last=node.log.get(node.last_i),
            applied_i=len(node.store) - 1,
            promised_n=node.promised,
            lease_holder=next(
                (v.node for v in reversed(node.store) if isinstance(v, MasterSet)), None
            ),
        )
        self.seed += 1
        node.state = initial_state(node.config, rec, self.now, self.seed)

    def names(self, args: list[str]) -> list[str]:
        if args:
            return args
        return [n for n, node in self.nodes.items() if node.state is not None]

    def cmd_time(self, args: list[str]) -> None:
        t = args[0]
        self.now = self.now + float(t[1:]) if t.startswith("+") else float(t)

    def cmd_tick(self, args: list[str]) -> None:
        for name in self.names(args):
            self.step(self.nodes[name], Tick())

    def cmd_deliver(self, args: list[str]) -> None:
        pattern = args[0] if args else None
        batch, self.net = self.net, []
        for src, dst, msg in batch:
            if not self._match(pattern, src, dst):
                self.net.append((src, dst, msg))
                continue
            node = self.nodes[dst]
            if src in self.isolated or dst in self.isolated:
                self.out.append(f"lost {src}->{dst} {fmt_msg(msg)}")
                continue
            if node.state is None:
                self.out.append(f"{dst}: (down) drops {fmt_msg(msg)} from {src}")
                continue
            self.out.append(f"{src}->{dst} {fmt_msg(msg)}")
            self.step(node, Receive(src=src, msg=msg))

    def cmd_drop(self, args: list[str]) -> None:
        pattern = args[0] if args else None
        kept = []
        for src, dst, msg in self.net:
            if self._match(pattern, src, dst):
                self.out.append(f"dropped {src}->{dst} {fmt_msg(msg)}")
            else:
                kept.append((src, dst, msg))
        self.net = kept

    def cmd_persist(self, args: list[str]) -> None:
        for name in self.names(args):
            node = self.nodes[name]
            writes, node.writes = node.writes, []
            for w in writes:
                if w.entry is None:
                    node.promised = max(node.promised, w.promise)
                else:
                    e = w.entry
                    assert e.i in (node.last_i, node.last_i + 1), f"{name}: S3 write {e.i}"
                    node.log[e.i] = e
                    node.last_i = e.i
                    if node.config.is_voter:
                        value, who = self.accepts.setdefault((e.i, e.n), (e.value, set()))
                        assert value == e.value, f"two values at slot {e.i} ballot {e.n}"
                        who.add(name)
                        if len(who) >= node.config.quorum_size:
                            old = self.chosen.setdefault(e.i, e.value)
                            assert old == e.value, f"S1: slot {e.i} chosen twice"
                self.net.extend(w.held)
                if w.entry is not None and node.state is not None:
                    self.step(node, Persisted(i=w.entry.i, n=w.entry.n))

    def cmd_apply(self, args: list[str]) -> None:
        for name in self.names(args):
            node = self.nodes[name]
            applies, node.applies = node.applies, []
            for ev in applies:
                self.step(node, ev)

    def cmd_catchup(self, args: list[str]) -> None:
        for name in self.names(args):
            node = self.nodes[name]
            sources, node.catchups = node.catchups, []
            for source in sources:
                src = self.nodes[source]
                if src.state is None:
                    self.out.append(f"{name}: catch-up source {source} is down")
                    self.step(node, CatchupFailed(source=source))
                    continue
                top = min(len(src.store) - 1, src.last_i)
                holder = None  # the newest lease among the copied slots (R2)
                for i in range(len(node.store), top + 1):
                    node.log[i] = src.log[i]
                    node.last_i = i
                    node.store.append(src.log[i].value)
                    if isinstance(src.log[i].value, MasterSet):
                        holder = src.log[i].value.node  # type: ignore[union-attr]  # checked by the isinstance above
                self.out.append(f"{name}: caught up from {source} to slot {len(node.store) - 1}")
                self.step(
                    node,
                    CatchupDone(
                        applied_i=len(node.store) - 1,
                        last=node.log.get(node.last_i),
                        lease_holder=holder,
                    ),
                )

    def cmd_client(self, args: list[str]) -> None:
        reqs = []
        for a in args[1:]:
            rid, _, payload = a.partition(":")
            reqs.append(ClientRequest(rid=int(rid), payload=payload.encode()))
            self.payloads[int(rid)] = payload.encode()
        self.step(self.nodes[args[0]], ClientBatch(requests=tuple(reqs)))

    def cmd_dropmaster(self, args: list[str]) -> None:
        self.step(self.nodes[args[0]], DropMaster(rid=int(args[1])))

    def cmd_crash(self, args: list[str]) -> None:
        for name in args:
            node = self.nodes[name]
            for w in node.writes:
                # A write that was not durable is a torn tail: the WAL drops it at start (R1).
                what = fmt_entry(w.entry) if w.entry is not None else f"promise {w.promise}"
                self.out.append(f"{name}: torn write lost: {what}")
            node.state = None
            node.writes, node.applies, node.catchups = [], [], []
            node.store = []

    def cmd_restart(self, args: list[str]) -> None:
        node = self.nodes[args[0]]
        self._start(node)
        self.cmd_state([node.name])

    def cmd_isolate(self, args: list[str]) -> None:
        self.isolated.update(args)

    def cmd_heal(self, args: list[str]) -> None:
        self.isolated.clear()

    def cmd_stabilize(self, args: list[str]) -> None:
        for _ in range(MAX_STABILIZE_ROUNDS):
            busy = bool(self.net) or any(
                n.writes or n.applies or n.catchups
                for n in self.nodes.values()
                if n.state is not None and (not args or n.name in args)
            )
            if not busy:
                return
            self.cmd_persist(args)
            self.cmd_apply(args)
            self.cmd_catchup(args)
            self.cmd_deliver([])
        raise AssertionError("stabilize did not converge")

    def cmd_state(self, args: list[str]) -> None:
        for name in self.names(args) if args else list(self.nodes):
            node = self.nodes[name]
            if node.state is None:
                self.out.append(f"{name}: down")
                continue
            s = node.state
            self.out.append(
                f"{name}: {role(s).value} n={s.n} applied={applied_i(s)} "
                f"last={fmt_entry(s.last)} master={master(node.config, s, self.now) or '-'}"
                f"{' lease' if lease_valid(node.config, s, self.now) else ''}"
            )

    def cmd_log(self, args: list[str]) -> None:
        for name in args or list(self.nodes):
            node = self.nodes[name]
            entries = " ".join(fmt_entry(node.log[i]) for i in sorted(node.log))
            store = " ".join(fmt_value(v) for v in node.store)
            self.out.append(f"{name}: log [{entries}] store [{store}]")


def run_script(text: str) -> str:
    """Run a script; return it with every command's trace replaced by the actual one."""
    out: list[str] = []
    cluster = Cluster(out)
    for line in text.splitlines():
        if line.startswith("> "):
            out.append(line)
            words = line[2:].split()
            getattr(cluster, f"cmd_{words[0]}")(words[1:])
        elif line.startswith("#") or not line.strip():
            out.append(line)
        # any other line is expected output, replaced by what actually happened
    return "\n".join(out) + "\n"


SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(path: Path) -> None:
    expected = path.read_text()
    actual = run_script(expected)
    if os.environ.get("PARAKOON_REWRITE") == "1":
        path.write_text(actual)
        return
    assert actual == expected, f"{path.name}: trace differs (PARAKOON_REWRITE=1 to accept)"


def test_every_required_scenario_exists() -> None:
    names = {p.stem for p in SCRIPTS}
    required = {
        "normal_commit",
        "leader_crash_mid_slot",
        "unreplicated_value_never_applied",
        "split_vote",
        "follower_behind_catches_up",
        "lease_expiry_election",
        "drop_master",
        "restart_torn_last_entry",
    }
    assert required <= names, f"missing scenarios: {sorted(required - names)}"


# --- random interleavings (hypothesis) ------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(st.integers(0, 11), st.integers(0, 1000), st.sampled_from([0.0, 0.1, 0.6, 2.5])),
    max_size=120,
)


@settings(max_examples=int(os.environ.get("PARAKOON_HYPOTHESIS_EXAMPLES", "300")), deadline=None)
@given(actions=ACTIONS, voters=st.sampled_from([1, 2, 3, 5]))
def test_random_interleavings_are_safe(actions: list[tuple[int, int, float]], voters: int) -> None:
    """Any order of deliveries, drops, duplicates, writes, applies, catch-ups, ticks, client
    requests, crashes and restarts keeps S1/S4 (every Apply is the chosen value, in order), S7
    (one lease holder at a time) and S9 (a Reply only for a chosen update); the Cluster checks
    them on every step, and check_invariants checks each state."""
    cluster = Cluster([])
    names = [f"n{k}" for k in range(voters)]
    cluster.cmd_cluster([",".join(names), "lease=2.0"])
    rid = 0
    for kind, pick, dt in actions:
        name = names[pick % voters]
        node = cluster.nodes[name]
        if kind <= 2 and cluster.net:
            k = pick % len(cluster.net)
            src, dst, msg = cluster.net[k]
            if kind == 0:
                del cluster.net[k]
                target = cluster.nodes[dst]
                if target.state is not None:
                    cluster.step(target, Receive(src=src, msg=msg))
            elif kind == 1:
                del cluster.net[k]  # lost
            else:
                cluster.net.append((src, dst, msg))  # duplicated
        elif kind == 3 and node.state is not None:
            cluster.cmd_persist([name])
        elif kind == 4 and node.state is not None:
            cluster.cmd_apply([name])
        elif kind == 5 and node.state is not None:
            cluster.cmd_catchup([name])
        elif kind in (6, 7):
            cluster.now += dt
            if node.state is not None:
                cluster.step(node, Tick())
        elif kind == 8 and node.state is not None:
            rid += 1
            cluster.cmd_client([name, f"{rid}:p{rid}"])
        elif kind == 9 and node.state is not None and pick % 4 == 0:
            cluster.cmd_crash([name])
        elif kind == 10 and node.state is None:
            cluster.cmd_restart([name])
        elif kind == 11:
            cluster.cmd_stabilize([])
