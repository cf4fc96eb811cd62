"""The TLS keys of cluster.toml (issue 16): how they fit together, and the checks of the files
a node makes at start. Real certificates (``parakoon_certs``), no node process."""

from __future__ import annotations

from pathlib import Path

import pytest
from parakoon_certs import CA

from parakoon_node.runtime.config import ClusterConfig, ConfigError, load_config
from parakoon_node.runtime.tls import TlsContexts, check_tls_files


def node_table(index: int, **overrides: str) -> str:
    fields = {
        "name": f'"node_{index}"',
        "addresses": f'["127.0.0.1:{4010 + index}"]',
        "client_port": str(4000 + index),
        "home_dir": f'"data/node_{index}"',
    }
    fields.update(overrides)
    return "\n[[nodes]]\n" + "".join(f"{key} = {value}\n" for key, value in fields.items())


def document(cluster: str = '[cluster]\nid = "p"\n', nodes: list[str] | None = None) -> str:
    return cluster + "".join(nodes if nodes is not None else [node_table(i) for i in range(3)])


def load_text(tmp_path: Path, text: str) -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return str(info.value)


TLS_CLUSTER = """\
[cluster]
id = "parakoon"
tls_ca_cert = "certs/ca.pem"
tls_service = true
tls_service_validate_peer = true
"""


def tls_nodes(count: int = 3) -> list[str]:
    return [
        node_table(i, tls_cert=f'"certs/node_{i}.pem"', tls_key=f'"certs/node_{i}.key"')
        for i in range(count)
    ]


def test_tls_keys_load_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_text(tmp_path, document(TLS_CLUSTER, tls_nodes()))
    assert config.tls_ca_cert == tmp_path / "certs" / "ca.pem"
    assert config.tls_service
    assert config.tls_service_validate_peer
    assert config.nodes[1].tls_cert == tmp_path / "certs" / "node_1.pem"
    assert config.nodes[1].tls_key == tmp_path / "certs" / "node_1.key"
    assert config.nodes[0].metrics_address == "127.0.0.1"


@pytest.mark.parametrize(
    ("cluster", "nodes", "expected"),
    [
        # tls_service without a CA
        ('[cluster]\nid = "p"\ntls_service = true\n', None, "cluster.tls_service: needs"),
        # validate_peer without tls_service
        (
            '[cluster]\nid = "p"\ntls_ca_cert = "ca.pem"\ntls_service_validate_peer = true\n',
            tls_nodes(),
            "cluster.tls_service_validate_peer: only meaningful with tls_service",
        ),
        # a key without its certificate
        (
            TLS_CLUSTER,
            [*tls_nodes(2), node_table(2, tls_key='"k.key"')],
            "nodes[2].tls_cert: missing: tls_key is set",
        ),
        # a certificate without its key
        (
            TLS_CLUSTER,
            [*tls_nodes(2), node_table(2, tls_cert='"c.pem"')],
            "nodes[2].tls_key: missing: tls_cert is set",
        ),
        # node certificates without a CA
        (
            '[cluster]\nid = "p"\n',
            [node_table(0, tls_cert='"c.pem"', tls_key='"k.key"')],
            "nodes[0].tls_cert: only meaningful with cluster.tls_ca_cert",
        ),
        ('[cluster]\nid = "p"\ntls_service = "yes"\n', None, "cluster.tls_service: expected true"),
        ('[cluster]\nid = "p"\ntls_ca_cert = 3\n', None, "cluster.tls_ca_cert: expected a string"),
        (
            '[cluster]\nid = "p"\n',
            [node_table(0, metrics_address='"http://x"')],
            "nodes[0].metrics_address: expected a host",
        ),
    ],
)
def test_tls_key_rules_name_the_key(
    tmp_path: Path, cluster: str, nodes: list[str] | None, expected: str
) -> None:
    assert expected in error_of(tmp_path, document(cluster, nodes))


def test_metrics_ports_of_nodes_on_other_hosts_do_not_clash(tmp_path: Path) -> None:
    # Every node binds its metrics to its own 127.0.0.1: the same port on each host is fine.
    nodes = [
        node_table(i, addresses=f'["10.0.0.{i + 1}:4010"]', client_port="4000", metrics_port="9100")
        for i in range(3)
    ]
    config = load_text(tmp_path, document(nodes=nodes))
    assert [n.metrics_address for n in config.nodes] == ["127.0.0.1"] * 3
    clash = [node_table(0, metrics_port="4000")]
    assert "nodes[0].metrics_port: port 4000" in error_of(tmp_path, document(nodes=clash))


def _tls_setup(tmp_path: Path) -> tuple[CA, Path]:
    ca = CA("ca", tmp_path / "certs")
    for i in range(3):
        ca.issue(f"node_{i}")
    path = tmp_path / "cluster.toml"
    path.write_text(document(TLS_CLUSTER, tls_nodes()))
    return ca, path


def _start_error(path: Path, node: str = "node_0") -> str:
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        check_tls_files(config, config.node(node))
    return str(info.value)


def test_a_node_needs_its_own_certificate_only_when_it_starts(tmp_path: Path) -> None:
    # A file written by `parakoon join` knows no other node's certificate: it loads, and only
    # the node that starts must have one.
    config = load_text(tmp_path, document(TLS_CLUSTER, [*tls_nodes(2), node_table(2)]))
    with pytest.raises(ConfigError, match=r"nodes\[2\]\.tls_cert: missing: cluster.tls_ca_cert"):
        check_tls_files(config, config.node("node_2"))


def test_node_start_checks_its_files(tmp_path: Path) -> None:
    ca, path = _tls_setup(tmp_path)
    config = load_config(path)
    check_tls_files(config, config.node("node_0"))  # all good

    (tmp_path / "certs" / "node_0.key").unlink()
    assert "nodes[0].tls_key: key" in _start_error(path)
    assert "no such file" in _start_error(path)

    # A key that belongs to another certificate.
    (tmp_path / "certs" / "node_0.key").write_bytes(
        (tmp_path / "certs" / "node_1.key").read_bytes()
    )
    message = _start_error(path)
    assert "nodes[0].tls_cert" in message
    assert "does not match its key" in message

    # Not a certificate at all.
    ca.issue("node_0")
    (tmp_path / "certs" / "node_0.pem").write_text("hello\n")
    assert "nodes[0].tls_cert" in _start_error(path)

    ca.issue("node_0")
    (tmp_path / "certs" / "ca.pem").write_text("not a CA\n")
    message = _start_error(path)
    assert "cluster.tls_ca_cert" in message
    assert "not a PEM certificate" in message


def test_contexts_reload_when_files_change_and_keep_the_old_on_a_broken_one(
    tmp_path: Path,
) -> None:
    ca, path = _tls_setup(tmp_path)
    config = load_config(path)
    contexts = TlsContexts(config, config.node("node_0"))
    first = contexts.current()
    assert contexts.current() is first  # nothing changed: no reload

    # A broken pair (another node's key): the old contexts stay, and it is not retried on
    # every connection until a file changes again.
    key = tmp_path / "certs" / "node_0.key"
    key.write_bytes((tmp_path / "certs" / "node_1.key").read_bytes())
    assert contexts.current() is first
    assert contexts.reload_failures == 1
    assert contexts.current() is first
    assert contexts.reload_failures == 1
    assert not contexts.reload("test")
    assert contexts.reload_failures == 2

    ca.issue("node_0")  # a good new pair
    second = contexts.current()
    assert second is not first
    assert contexts.reloads == 1
    assert second.client_service is not None
