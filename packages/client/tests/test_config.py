"""Reading cluster.toml into the client's view: cluster id and client addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from parakoon_client.config import ConfigError, load_cluster_nodes, parse_host_port

GOOD = """
[cluster]
id = "parakoon"
master_mode = "elected"
lease_period_secs = 2.0

[[nodes]]
name = "node_0"
addresses = ["127.0.0.1:4010"]
client_port = 4000
home_dir = "data/node_0"

[[nodes]]
name = "node_1"
addresses = ["[::1]:4011", "10.0.0.1:4011"]
client_port = 4001
home_dir = "data/node_1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_id_and_client_addresses(tmp_path: Path) -> None:
    view = load_cluster_nodes(write(tmp_path, GOOD))
    assert view.cluster_id == "parakoon"
    assert dict(view.nodes) == {"node_0": ("127.0.0.1", 4000), "node_1": ("::1", 4001)}
    assert list(view.nodes) == ["node_0", "node_1"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[nodes]]\nname='a'\naddresses=['h:1']\nclient_port=2\n", "[cluster]"),
        ("[cluster]\n[[nodes]]\nname='a'\naddresses=['h:1']\nclient_port=2\n", "id"),
        ("[cluster]\nid='x'\n", "[[nodes]]"),
        ("[cluster]\nid='x'\n[[nodes]]\naddresses=['h:1']\nclient_port=2\n", "name"),
        ("[cluster]\nid='x'\n[[nodes]]\nname='a'\nclient_port=2\n", "addresses"),
        ("[cluster]\nid='x'\n[[nodes]]\nname='a'\naddresses=['h:1']\n", "client_port"),
        ("[cluster]\nid='x'\n[[nodes]]\nname='a'\naddresses=['h']\nclient_port=2\n", "host:port"),
        (
            "[cluster]\nid='x'\n[[nodes]]\nname='a'\naddresses=['h:1']\nclient_port=70000\n",
            "client_port",
        ),
        (
            "[cluster]\nid='x'\n[[nodes]]\nname='a'\naddresses=['h:1']\nclient_port=2\n"
            "[[nodes]]\nname='a'\naddresses=['h:3']\nclient_port=4\n",
            "duplicate",
        ),
        ("[cluster\n", "TOML"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.toml") as info:
        load_cluster_nodes(write(tmp_path, text))
    assert needle in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_cluster_nodes(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:4000", ("127.0.0.1", 4000)), ("[::1]:1", ("::1", 1)), ("h:65535", ("h", 65535))],
)
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, where="k") == expected


@pytest.mark.parametrize("text", ["h:0", "h:x", ":4000", "h"])
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^k: "):
        parse_host_port(text, where="k")
