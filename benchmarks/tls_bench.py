"""The cost of TLS: the same 3-node cluster and `parakoon bench`, plain TCP and TLS, back to back.

Usage::

    uv run --all-packages python benchmarks/tls_bench.py [--ops 30000] [--rounds 2]

Each round starts a fresh plain cluster, runs `parakoon bench --clients 128 --phases set,get`,
stops it, then does the same with TLS on both ports (`tls_ca_cert`, `tls_service = true`,
`tls_service_validate_peer = true`; ECDSA P-256 certificates made by `testing/parakoon_certs.py`,
the bench presenting a client certificate). Alternating in rounds spreads the drift of a shared
machine over both. Results go to docs/performance.md (section ``tls``).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "testing"))
from _report import markdown_table, write_section
from cluster_bench import start_nodes, stop_nodes, write_config
from parakoon_certs import CA

READING = (
    "How to read it: on this machine every request and answer is encrypted and decrypted twice,"
    " by the node and by the bench's own client, and the bench's 128 connections share the 2"
    " cores with the 3 nodes; every replicated write also crosses two TLS peer links. The"
    " record layer runs in Python around OpenSSL (anyio's `TLSStream` over memory BIOs on the"
    " node, over the lean asyncio stream of `clientserver/fast.py` on the client port; asyncio's"
    " SSL protocol in the bench). Part of the cost measured here is therefore the bench's own;"
    " it was not measured apart. The spread between rounds is the shared machine (load"
    " average 6 to 7 on 2 cores during the run).\n"
)


def add_tls(config: Path) -> tuple[Path, Path]:
    """Turn TLS on in ``config``; return the client certificate and key the bench presents."""
    ca = CA("bench-ca", config.parent / "certs")
    text = config.read_text().replace(
        'id = "bench"\n',
        'id = "bench"\ntls_ca_cert = "certs/bench-ca.pem"\ntls_service = true\n'
        "tls_service_validate_peer = true\n",
    )
    for k in range(3):
        ca.issue(f"node_{k}")
        anchor = f'name = "node_{k}"\n'
        text = text.replace(
            anchor, anchor + f'tls_cert = "certs/node_{k}.pem"\ntls_key = "certs/node_{k}.key"\n'
        )
    config.write_text(text)
    client = ca.issue("bench-client")
    return client.cert, client.key


def wait_listening(config: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until every node's client port accepts connections (a busy machine starts them slowly)."""
    ports = [int(m) for m in re.findall(r"^client_port = (\d+)$", config.read_text(), re.M)]
    deadline = time.monotonic() + 60
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise SystemExit(f"the nodes of {config} did not start") from None
                time.sleep(0.2)


def run_one(tls: bool, ops: int, phases: str) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="parakoon-tls-bench-") as tmp:
        base = Path(tmp)
        config = write_config(base, fsync=True)
        extra: list[str] = []
        if tls:
            cert, key = add_tls(config)
            extra = ["--tls-cert", str(cert), "--tls-key", str(key)]
        procs = start_nodes(config, base)
        try:
            wait_listening(config, procs)
            out = base / "bench.json"
            cmd = [sys.executable, "-m", "parakoon_node", "bench", "--config", str(config),
                   *extra, "--clients", "128", "--ops", str(ops), "--phases", phases,
                   "--json", str(out)]  # fmt: skip
            print("+", "tls" if tls else "plain", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True)
            results = json.loads(out.read_text())["results"]
        finally:
            stop_nodes(procs)
    return {r["phase"]: r for r in results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=30_000, help="operations per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phases", default="set,get")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    runs: dict[bool, list[dict[str, dict[str, float]]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for tls in (False, True):
            runs[tls].append(run_one(tls, args.ops, args.phases))
    rows = []
    for phase in args.phases.split(","):
        for tls in (False, True):
            for i, run in enumerate(runs[tls], start=1):
                r = run[phase]
                rows.append(
                    (
                        phase,
                        "TLS" if tls else "plain",
                        i,
                        r["ok"],
                        r["failed"],
                        f"{r['ops_per_sec']:.0f}",
                        f"{r['p50_ms']:.2f}",
                        f"{r['p99_ms']:.2f}",
                    )
                )
    summary = []
    for phase in args.phases.split(","):
        plain = sum(run[phase]["ops_per_sec"] for run in runs[False]) / args.rounds
        tls_rate = sum(run[phase]["ops_per_sec"] for run in runs[True]) / args.rounds
        summary.append(
            f"- {phase}: plain {plain:.0f} ops/s, TLS {tls_rate:.0f} ops/s"
            f" ({(tls_rate / plain - 1) * 100:+.0f}%)"
        )
    table = markdown_table(
        ("phase", "transport", "round", "ok", "failed", "ops/s", "p50 ms", "p99 ms"), rows
    )
    print(table)
    print("\n".join(summary))
    if not args.no_write:
        body = (
            "3 nodes on 127.0.0.1, fsync on, lease 2 s, 128 clients, 16-byte keys, 100-byte"
            " values; each round a fresh plain cluster, then a fresh TLS cluster (TLS on the"
            " peer links and the client port, client certificates required, ECDSA P-256, TLS"
            " 1.3). The machine was shared with other long runs (simulator and fault tests)"
            " while this ran: compare the rows of one round, not with other sections.\n\n"
            f"{table}\n\nMean over the rounds:\n\n" + "\n".join(summary) + "\n\n" + READING
        )
        write_section("tls", "TLS: plain TCP against TLS on both ports", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
