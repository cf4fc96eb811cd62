"""A small cluster of hosts on one machine: network namespaces, a bridge, one filesystem per node.

Each node runs in its own network namespace (``pktest-<pid>-<i>``) with its own address on a
private bridge (``pkb<pid>``, a /24 in 10.213.0.0/16 that exists only on this bridge), and its
``home_dir`` on its own ext4 filesystem (a sparse image on a loop device, mounted under the
test's folder). The test process stays in the root namespace and reaches the nodes through the
bridge, as clients on another machine would. Names carry the pid of the test process, so
``cleanup_leftovers`` can find and remove what a crashed run left behind (namespaces, links,
mounts, loop devices) without touching a live run's.

The faults are real: nftables rules inside the namespaces drop packets (partitions, one-way
cuts, a client cut from one node), ``tc netem`` shapes each link, ``EXT4_IOC_SHUTDOWN`` with the
no-log-flush flag throws away everything the filesystem has not made durable (power loss) or
makes every further write and fsync fail with EIO (a dying disk), ``fsfreeze`` hangs every
write, and a filler file fills the disk. Everything here needs root; ``missing_capabilities``
says what a machine lacks, so that the tests skip with that reason instead of failing.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path
from typing import Any

from parakoon_testing import free_ports

from ..conftest import ClusterProcs, RawConnection  # noqa: TID252 - shared harness

PREFIX = "pktest-"
SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")
COMMANDS = ("ip", "nft", "tc", "losetup", "mkfs.ext4", "mount", "umount", "fsfreeze", "nsenter")
#: ext4's shutdown ioctl (_IOR('X', 125, __u32)) and its flag "do not flush the journal":
#: what the disk holds afterwards is what was durable before, as after a power cut.
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 0x2
#: Mount options: journal commits every 60 s instead of 5, so that data a node did not fsync
#: really is lost at a power cut in a short test, instead of being saved by a routine commit.
MOUNT_OPTIONS = "commit=60"


class NetnsError(RuntimeError):
    pass


def sh(*cmd: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command (bounded); on failure raise naming the command and its stderr."""
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=30, input=stdin, check=False
    )
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def missing_capabilities() -> list[str]:
    """What this machine lacks for the namespace tests; empty when it has everything."""
    missing: list[str] = []
    if os.geteuid() != 0:
        return ["root (network namespaces, nftables, loop devices and mounts need it)"]
    missing += [f"the command {c!r}" for c in COMMANDS if shutil.which(c) is None]
    if not Path("/dev/loop-control").exists():
        missing.append("loop devices (/dev/loop-control)")
    if missing:
        return missing
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        sh("ip", "netns", "add", probe)
        sh("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe")
    except (NetnsError, subprocess.TimeoutExpired) as exc:
        missing.append(f"network namespaces with nftables ({exc})")
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return missing


def libfaketime() -> str | None:
    """The path of libfaketime (Debian's package ``faketime``), or None."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    return str(found[0]) if found else None


def clock_env(
    rate: float, wall_offset_secs: int = 0, control: Path | None = None
) -> dict[str, str]:
    """Environment that runs a node on a clock ticking at ``rate`` times real time (monotonic
    and wall clock, and its sleeps and timeouts with them), its wall clock shifted by
    ``wall_offset_secs``. libfaketime applies the rate from the process's start.

    With ``control``, the clock is read from that file (re-read every second) and
    ``set_clock`` changes it while the node runs: a new rate applies from the process's start,
    so changing it makes the clock jump (a clock gone wrong, far beyond any drift bound)."""
    lib = libfaketime()
    if lib is None:
        raise NetnsError("libfaketime is not installed (apt-get install faketime)")
    env = {"LD_PRELOAD": lib}
    if control is None:
        env["FAKETIME"] = f"{wall_offset_secs:+d} x{rate}"
    else:
        set_clock(control, rate, wall_offset_secs)
        env["FAKETIME_TIMESTAMP_FILE"] = str(control)
        env["FAKETIME_CACHE_DURATION"] = "1"
    return env


def set_clock(control: Path, rate: float, wall_offset_secs: int = 0) -> None:
    control.write_text(f"{wall_offset_secs:+d} x{rate}\n")


def has_netem() -> bool:
    """Whether the kernel has ``sch_netem`` (some VM kernels ship without it)."""
    probe = f"{PREFIX}{os.getpid()}-netem"
    try:
        sh("ip", "netns", "add", probe)
        return (
            sh("tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
               check=False).returncode == 0
        )  # fmt: skip
    finally:
        sh("ip", "netns", "del", probe, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str, pattern: str) -> int | None:
    """The pid of the test run that made a resource, from its name, when it is dead."""
    match = re.search(pattern, name)
    if match is None:
        return None
    pid = int(match.group(1))
    return None if pid == os.getpid() or _pid_alive(pid) else pid


def cleanup_leftovers() -> list[str]:
    """Remove the namespaces, links, mounts and loop devices of runs whose process is gone.

    Returns what it removed (one line each). Safe to call any time: a live run's resources
    (its pid is alive) are left alone.
    """
    removed: list[str] = []
    mounts = Path("/proc/mounts").read_text().splitlines()
    for line in mounts:
        source, target = line.split()[:2]
        target = target.replace("\\040", " ")
        if target.startswith("/run/netns/"):
            continue  # a namespace's own mount: `ip netns del` below removes it
        if _owner(target, rf"/{PREFIX}(\d+)-") is not None:
            sh("fsfreeze", "-u", target, check=False)
            sh("umount", "-l", target, check=False)
            removed.append(f"mount {target}")
            if source.startswith("/dev/loop"):
                sh("losetup", "-d", source, check=False)
    for line in sh("losetup", "-n", "-O", "NAME,BACK-FILE", "-l", check=False).stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and _owner(parts[1], rf"/{PREFIX}(\d+)-") is not None:
            sh("losetup", "-d", parts[0], check=False)
            removed.append(f"loop {parts[0]} ({parts[1]})")
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(PREFIX) and _owner(ns, rf"^{PREFIX}(\d+)-") is not None:
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
            removed.append(f"netns {ns}")
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        match = re.match(r"\d+: (pk[bv]\d+(?:n\d+)?)[@:]", line)
        if match and _owner(match.group(1), r"^pk[bv](\d+)") is not None:
            sh("ip", "link", "del", match.group(1), check=False)
            removed.append(f"link {match.group(1)}")
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no interface of the root namespace uses."""
    used = sh("ip", "-o", "-4", "addr", "show").stdout
    start = os.getpid() % 256
    for k in range(256):
        net = list(SUBNETS.subnets(new_prefix=24))[(start + k) % 256]
        if f" {str(net.network_address)[:-1]}" not in used:  # "10.213.7." on no interface
            return net
    raise NetnsError("no free /24 left in 10.213.0.0/16")


class NetnsCluster(ClusterProcs):
    """A cluster of real node processes, one per network namespace and filesystem.

    It keeps ``ClusterProcs``'s interface (start, kill, pause, call, wait_master, ...), so the
    fault tests' workload and checks run on it unchanged, and adds the faults of this module.
    """

    def __init__(
        self,
        base: Path,
        *,
        nodes: int = 3,
        lease_period_secs: float = 1.0,
        fsync: bool = True,
        cluster_extra: str = "",
        disk_mib: int = 640,  # sparse; above the node's default 256 MiB reserve
    ) -> None:
        self.base = base
        self.run_id = os.getpid()
        self.names = [f"node_{k}" for k in range(nodes)]
        self.lease = lease_period_secs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = base / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        net = _free_subnet()
        self.gateway = str(net.network_address + 1)
        self.hosts = {n: str(net.network_address + 10 + k) for k, n in enumerate(self.names)}
        self.netns = {n: f"{PREFIX}{self.run_id}-{k}" for k, n in enumerate(self.names)}
        self.veth = {n: f"pkv{self.run_id}n{k}" for k, n in enumerate(self.names)}
        self.bridge = f"pkb{self.run_id}"
        # Every node listens on the same two ports, each on its own address. Taken free like
        # any test's (no port is fixed), though only these namespaces can reach them.
        self.client_port, self.peer_port = free_ports(2)
        self.client_ports = dict.fromkeys(self.names, self.client_port)
        self.peer_ports = dict.fromkeys(self.names, self.peer_port)
        self.metrics_ports: dict[str, int] = {}
        self.redis_ports: dict[str, int] = {}
        self.mounts = {n: base / f"{PREFIX}{self.run_id}-{n}" for n in self.names}
        self.images = {n: base / "disks" / f"{PREFIX}{self.run_id}-{n}.img" for n in self.names}
        self.loops: dict[str, str] = {}
        self.disk_mib = disk_mib
        # The network faults in force; the rules of every namespace are rebuilt from these.
        self.blocked: set[frozenset[str]] = set()  # both directions, every port
        self.cuts: set[tuple[str, str]] = set()  # (src, dst): src's messages to dst vanish
        self.client_cuts: set[str] = set()  # clients (the root namespace) cannot reach it
        self.shaping: dict[tuple[str, str], str] = {}  # (src, dst) -> netem arguments
        self.losses: dict[tuple[str, str], int] = {}  # (src, dst) -> packets dropped per 1000
        self.frozen: set[str] = set()
        self.fillers: dict[str, Path] = {}
        try:
            self._set_up()
        except BaseException:
            self.teardown()
            raise
        self.config = base / "cluster.toml"
        self.write_config(lease_period_secs=lease_period_secs, fsync=fsync, extra=cluster_extra)

    def peer_address(self, name: str) -> str:
        return f"{self.hosts[name]}:{self.peer_port}"

    # ------------------------------------------------------------------ set-up and teardown

    def _set_up(self) -> None:
        cleanup_leftovers()
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        (self.base / "disks").mkdir(parents=True, exist_ok=True)
        for name in self.names:
            ns = self.netns[name]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", self.veth[name], "type", "veth", "peer", "name", "eth0",
               "netns", ns)  # fmt: skip
            sh("ip", "link", "set", self.veth[name], "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.hosts[name]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self._apply_rules(name)
            image = self.images[name]
            with open(image, "wb") as f:
                f.truncate(self.disk_mib << 20)
            sh("mkfs.ext4", "-q", "-F", "-m", "0", str(image))  # no blocks kept for root
            self.loops[name] = sh("losetup", "--find", "--show", str(image)).stdout.strip()
            self.mounts[name].mkdir(parents=True, exist_ok=True)
            self._mount(name)

    def _mount(self, name: str) -> None:
        sh("mount", "-o", MOUNT_OPTIONS, self.loops[name], str(self.mounts[name]))
        self.home(name).parent.mkdir(parents=True, exist_ok=True)

    def _umount(self, name: str) -> None:
        sh("umount", str(self.mounts[name]))

    def teardown(self) -> None:
        """Kill the nodes and remove every namespace, link, mount and loop device made here."""
        with contextlib.suppress(Exception):
            super().shutdown()
        for name in self.names:
            sh("fsfreeze", "-u", str(self.mounts[name]), check=False)
            if self._mounted(name):
                sh("umount", "-l", str(self.mounts[name]), check=False)
            if name in self.loops:
                sh("losetup", "-d", self.loops[name], check=False)
            # The veth goes with its namespace, but later (asynchronously): delete it now.
            sh("ip", "link", "del", self.veth[name], check=False)
            sh("ip", "netns", "del", self.netns[name], check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def shutdown(self) -> None:
        self.teardown()

    def _mounted(self, name: str) -> bool:
        target = str(self.mounts[name])
        return any(
            line.split()[1] == target for line in Path("/proc/mounts").read_text().splitlines()
        )

    # ------------------------------------------------------------------ processes

    def home(self, name: str) -> Path:
        return self.mounts[name] / "home"

    def node_command(self, name: str) -> list[str]:
        # nsenter enters only the network namespace and execs the node (the pid is the node's).
        # Not `ip netns exec`: it also gives the process a mount namespace of its own, which
        # keeps a copy of the node's filesystem mount alive after the process died, so a
        # power-cut filesystem could still be mounted (and written) twice over one image.
        netns = f"--net=/run/netns/{self.netns[name]}"
        return ["nsenter", netns, "--", *super().node_command(name)]

    def connect(self, name: str, timeout: float = 5.0) -> RawConnection:
        return RawConnection(self.client_port, timeout=timeout, host=self.hosts[name])

    # ------------------------------------------------------------------ network faults

    def _apply_rules(self, name: str) -> None:
        """Rebuild ``name``'s nftables table from the faults in force (one atomic load)."""
        drop_in: list[str] = []
        drop_out: list[str] = []
        for other in self.names:
            if other != name and frozenset((name, other)) in self.blocked:
                drop_in.append(f"ip saddr {self.hosts[other]}")
                drop_out.append(f"ip daddr {self.hosts[other]}")
        for src, dst in self.cuts:
            if dst == name:
                # src's own stream to us (it dials our peer port) vanishes both ways; the one
                # we dial to src (its peer port, our ephemeral port) still flows.
                drop_in.append(f"ip saddr {self.hosts[src]} tcp dport {self.peer_port}")
                drop_out.append(f"ip daddr {self.hosts[src]} tcp sport {self.peer_port}")
        for (src, dst), per_mille in self.losses.items():
            if src == name:
                drop_out.append(f"ip daddr {self.hosts[dst]} numgen random mod 1000 < {per_mille}")
        if name in self.client_cuts:
            drop_in.append(f"ip saddr {self.gateway} tcp dport {self.client_port}")
            drop_out.append(f"ip daddr {self.gateway} tcp sport {self.client_port}")
        rules = [
            "flush ruleset",
            "table inet pktest {",
            "  chain input { type filter hook input priority 0; policy accept;",
            *[f"    {r} drop" for r in drop_in],
            "  }",
            "  chain output { type filter hook output priority 0; policy accept;",
            *[f"    {r} drop" for r in drop_out],
            "  }",
            "}",
        ]
        sh("ip", "netns", "exec", self.netns[name], "nft", "-f", "-", stdin="\n".join(rules) + "\n")

    def _apply_all(self) -> None:
        for name in self.names:
            self._apply_rules(name)

    def partition(self, *groups: list[str]) -> None:
        """Nodes in different groups cannot exchange a packet (nodes in no group keep every
        link: with groups [a] and [c], b sees both sides, a bridge)."""
        for k, group in enumerate(groups):
            for other in groups[k + 1 :]:
                for a in group:
                    for b in other:
                        self.blocked.add(frozenset((a, b)))
        self._apply_all()

    def isolate(self, name: str) -> None:
        """No peer link to or from ``name``; clients still reach it."""
        self.partition([name], [n for n in self.names if n != name])

    def cut(self, src: str, dst: str) -> None:
        """One-way: what ``src`` sends to ``dst`` vanishes; ``dst`` still reaches ``src``."""
        self.cuts.add((src, dst))
        self._apply_rules(dst)

    def cut_client(self, name: str) -> None:
        """Clients (the test process) cannot reach ``name``; its peers still can."""
        self.client_cuts.add(name)
        self._apply_rules(name)

    def lose(self, src: str, dst: str, per_mille: int) -> None:
        """Drop that share of the packets ``src`` sends to ``dst`` (nftables ``numgen``): TCP
        retransmits, so the link stays up but slow and bursty."""
        self.losses[(src, dst)] = per_mille
        self._apply_rules(src)

    def shape(self, src: str, dst: str, netem: str) -> None:
        """``tc netem`` on the link from ``src`` to ``dst`` ("delay 40ms 20ms reorder 10%").
        Only where the kernel has ``sch_netem`` (``has_netem``)."""
        self.shaping[(src, dst)] = netem
        self._apply_shaping(src)

    def _apply_shaping(self, src: str) -> None:
        ns = self.netns[src]
        sh("tc", "-n", ns, "qdisc", "del", "dev", "eth0", "root", check=False)
        links = [(dst, args) for (s, dst), args in sorted(self.shaping.items()) if s == src]
        if not links:
            return
        # prio with every packet in band 1 by default; one netem band per shaped link.
        bands = 1 + len(links)
        sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio",
           "bands", str(max(bands, 2)), "priomap", *["0"] * 16)  # fmt: skip
        for k, (dst, args) in enumerate(links, start=2):
            sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "parent", f"1:{k}",
               "handle", f"{k}0:", "netem", *args.split())  # fmt: skip
            sh("tc", "-n", ns, "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip",
               "prio", "1", "u32", "match", "ip", "dst", f"{self.hosts[dst]}/32",
               "flowid", f"1:{k}")  # fmt: skip

    def heal_links(self) -> None:
        """Every partition, cut, client cut and shaped link undone."""
        self.blocked.clear()
        self.cuts.clear()
        self.client_cuts.clear()
        self.losses.clear()
        shaped = {src for src, _ in self.shaping}
        self.shaping.clear()
        self._apply_all()
        for src in shaped:
            self._apply_shaping(src)

    # ------------------------------------------------------------------ disk faults

    def _shutdown_fs(self, name: str) -> None:
        fd = os.open(self.mounts[name], os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def power_loss(self, names: list[str]) -> None:
        """Power cut: each disk keeps only what was durable, then each node dies (SIGKILL).

        The filesystems are shut down first, all of them before any process is killed, so
        nothing a node writes after the cut reaches its disk. ``power_on`` brings them back.
        """
        for name in names:
            self._shutdown_fs(name)
        for name in names:
            if self.running(name):
                self.kill(name)

    def power_on(self, names: list[str]) -> None:
        """Remount (the journal replays what was committed) and start the nodes again."""
        for name in names:
            self._umount(name)
            # A fresh loop device, so that mounting cannot hand back the old (shut down)
            # superblock if anything still held it.
            sh("losetup", "-d", self.loops[name], check=False)
            image = str(self.images[name])
            self.loops[name] = sh("losetup", "--find", "--show", image).stdout.strip()
            self._mount(name)
            self.start(name)

    def fail_disk(self, name: str) -> None:
        """From now on every write and fsync of ``name``'s disk fails with EIO; the process
        keeps running and must notice."""
        self._shutdown_fs(name)

    def replace_failed_disk(self, name: str) -> None:
        """After ``fail_disk``: the node is stopped (SIGKILL if it still runs) and its disk
        comes back with what was durable; the node starts again."""
        if self.running(name):
            self.kill(name)
        self.power_on([name])

    def freeze(self, name: str) -> None:
        """Every write to ``name``'s disk hangs until ``thaw`` (fsfreeze)."""
        sh("fsfreeze", "-f", str(self.mounts[name]))
        self.frozen.add(name)

    def thaw(self, name: str) -> None:
        sh("fsfreeze", "-u", str(self.mounts[name]), check=False)
        self.frozen.discard(name)

    def fill(self, name: str, leave_bytes: int = 256 << 10) -> None:
        """Fill ``name``'s disk until only about ``leave_bytes`` are free (a filler file)."""
        filler = self.mounts[name] / "filler"
        size = 0
        with open(filler, "wb") as f:
            # Grow in steps until the filesystem refuses (the extent tree needs blocks too, so
            # "free space" cannot be taken in one call), then give ``leave_bytes`` back.
            for step in (64 << 20, 4 << 20, 256 << 10, 16 << 10):
                while True:
                    try:
                        os.posix_fallocate(f.fileno(), size, step)
                    except OSError:
                        break
                    size += step
            f.truncate(max(0, size - leave_bytes))
        self.fillers[name] = filler

    def unfill(self, name: str) -> None:
        filler = self.fillers.pop(name, None)
        if filler is not None:
            filler.unlink(missing_ok=True)

    def heal_disks(self) -> None:
        for name in list(self.frozen):
            self.thaw(name)
        for name in list(self.fillers):
            self.unfill(name)

    def describe(self) -> dict[str, Any]:
        return {"hosts": self.hosts, "netns": self.netns, "bridge": self.bridge}
