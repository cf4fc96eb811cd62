"""Validation of cluster.toml: every rule names the exact key, in the file's own words.

Each test writes a real file into a temporary folder and loads it with ``load_config`` as a node
would. The base document is the repository's three-node layout; each case changes one thing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from parakoon_node.runtime.config import (
    ClusterConfig,
    ConfigError,
    NodeConfig,
    check_home_dir,
    default_max_client_connections,
    load_config,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

CLUSTER = """\
[cluster]
id = "parakoon"
master_mode = "elected"
lease_period_secs = 2.0
"""


def node_table(index: int, **overrides: str) -> str:
    fields = {
        "name": f'"node_{index}"',
        "addresses": f'["127.0.0.1:{4010 + index}"]',
        "client_port": str(4000 + index),
        "home_dir": f'"data/node_{index}"',
    }
    fields.update(overrides)
    body = "".join(f"{key} = {value}\n" for key, value in fields.items() if value != "<drop>")
    return f"\n[[nodes]]\n{body}"


def document(cluster: str = CLUSTER, nodes: list[str] | None = None) -> str:
    if nodes is None:
        nodes = [node_table(i) for i in range(3)]
    return cluster + "".join(nodes)


def load_text(tmp_path: Path, text: str) -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    # Load by the bare file name, as a user in that folder would: messages start "cluster.toml: ".
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        return load_config("cluster.toml")
    finally:
        os.chdir(cwd)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    print(message)
    assert "\n" not in message, "one line per error"
    return message


# -------------------------------------------------------------------------------------------
# The good cases


def test_repository_cluster_toml_loads_as_three_local_nodes() -> None:
    config = load_config(REPO_ROOT / "cluster.toml")
    assert config.cluster_id == "parakoon"
    assert config.master_mode == "elected"
    assert config.lease_period_secs == 2.0
    assert config.fsync is True
    assert config.node_names == ("node_0", "node_1", "node_2")
    for index, node in enumerate(config.nodes):
        assert node.addresses == (("127.0.0.1", 4010 + index),)
        assert node.client_port == 4000 + index
        assert node.client_host == "127.0.0.1"
        assert node.home_dir == REPO_ROOT / "data" / f"node_{index}"
        assert node.compressor == "zstd"
        assert node.learner is False
    assert config.path == REPO_ROOT / "cluster.toml"


def test_defaults_for_everything_optional(tmp_path: Path) -> None:
    config = load_text(tmp_path, document(cluster='[cluster]\nid = "c"\n'))
    assert config == ClusterConfig(
        cluster_id="c",
        nodes=config.nodes,
        master_mode="elected",
        master=None,
        preferred=False,
        lease_period_secs=2.0,
        fsync=True,
        segment_entries_max=10_000,
        segment_bytes_max=64 * 1024 * 1024,
        collapse_threshold_entries=100_000,
        segments_to_keep=2,
        max_batch_count=2_000,
        max_batch_bytes=8 * 1024 * 1024,
        max_queued_requests=20_000,
        peer_queue_items=10_000,
        peer_frame_bytes_max=32 * 1024 * 1024,
        max_client_connections=default_max_client_connections(),
        max_value_bytes=8 * 1024 * 1024,
        max_request_bytes=64 * 1024 * 1024,
        path=tmp_path / "cluster.toml",
    )
    node = config.nodes[1]
    assert node == NodeConfig(
        name="node_1",
        addresses=(("127.0.0.1", 4011),),
        client_port=4001,
        home_dir=tmp_path / "data" / "node_1",
        compressor="zstd",
        learner=False,
        metrics_port=None,
        index=1,
        source="cluster.toml",
    )


def test_max_client_connections_default_follows_rule_22() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = 65536 if soft == resource.RLIM_INFINITY else max(soft - 200, 200)
    assert default_max_client_connections() == expected


def test_every_key_set_explicitly(tmp_path: Path) -> None:
    cluster = """\
[cluster]
id = "prod-1"
master_mode = "forced"
master = "node_2"
lease_period_secs = 3
fsync = false
segment_entries_max = 500
segment_bytes_max = 1048576
collapse_threshold_entries = 5000
segments_to_keep = 4
max_batch_count = 100
max_batch_bytes = 1048576
max_queued_requests = 1000
peer_queue_items = 2000
peer_frame_bytes_max = 4194304
max_client_connections = 50
max_value_bytes = 1024
max_request_bytes = 2097152
"""
    nodes = [
        node_table(0, compressor='"none"', metrics_port="9100"),
        node_table(1, learner="true", addresses='["127.0.0.1:4011", "10.0.0.2:4011"]'),
        node_table(2, home_dir='"/var/tmp/parakoon-test-node-2"', redis_port="6379"),
    ]
    config = load_text(tmp_path, document(cluster, nodes))
    assert config.cluster_id == "prod-1"
    assert config.master_mode == "forced"
    assert config.master == "node_2"
    assert config.lease_period_secs == 3.0
    assert isinstance(config.lease_period_secs, float)
    assert config.fsync is False
    assert (config.segment_entries_max, config.segment_bytes_max) == (500, 1048576)
    assert (config.collapse_threshold_entries, config.segments_to_keep) == (5000, 4)
    assert (config.max_batch_count, config.max_batch_bytes) == (100, 1048576)
    assert config.max_queued_requests == 1000
    assert (config.peer_queue_items, config.peer_frame_bytes_max) == (2000, 4194304)
    assert config.max_client_connections == 50
    assert (config.max_value_bytes, config.max_request_bytes) == (1024, 2097152)
    assert config.nodes[0].compressor == "none"
    assert config.nodes[0].metrics_port == 9100
    assert (config.nodes[0].redis_port, config.nodes[2].redis_port) == (None, 6379)
    assert config.nodes[1].learner is True
    assert config.nodes[1].addresses == (("127.0.0.1", 4011), ("10.0.0.2", 4011))
    assert config.nodes[2].home_dir == Path("/var/tmp/parakoon-test-node-2")
    assert [n.name for n in config.voters] == ["node_0", "node_2"]
    assert [n.name for n in config.learners] == ["node_1"]
    assert config.quorum == 2
    assert config.node("node_2") is config.nodes[2]


def test_home_dir_is_relative_to_the_file_not_the_working_directory(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "parakoon"
    folder.mkdir(parents=True)
    (folder / "cluster.toml").write_text(document(), encoding="utf-8")
    config = load_config(folder / "cluster.toml")
    assert config.nodes[0].home_dir == folder / "data" / "node_0"
    assert config.nodes[0].home_dir.is_absolute()


def test_ipv6_address_in_brackets(tmp_path: Path) -> None:
    nodes = [node_table(0, addresses='["[::1]:4010"]')]
    config = load_text(tmp_path, document(nodes=nodes))
    assert config.nodes[0].addresses == (("::1", 4010),)
    assert config.nodes[0].client_host == "::1"


def test_preferred_master(tmp_path: Path) -> None:
    cluster = CLUSTER + 'master = "node_1"\npreferred = true\n'
    config = load_text(tmp_path, document(cluster))
    assert (config.master, config.preferred, config.master_mode) == ("node_1", True, "elected")


def test_readonly_mode(tmp_path: Path) -> None:
    cluster = CLUSTER.replace('"elected"', '"readonly"')
    assert load_text(tmp_path, document(cluster)).master_mode == "readonly"


def test_node_lookup_of_an_unknown_name_names_the_known_ones(tmp_path: Path) -> None:
    config = load_text(tmp_path, document())
    with pytest.raises(ConfigError, match=r"no node named 'node_9' \(nodes: node_0, node_1"):
        config.node("node_9")


# -------------------------------------------------------------------------------------------
# File-level problems


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: no such file"


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_invalid_toml_names_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[cluster]\nid = "x\n')
    assert message.startswith("cluster.toml: not valid TOML: ")
    assert "line 2" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_bytes(b'[cluster]\nid = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_duplicate_table_key_is_a_toml_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[cluster]\nid = "a"\nid = "b"\n')
    assert message.startswith("cluster.toml: not valid TOML")


# -------------------------------------------------------------------------------------------
# Unknown and missing keys


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (document() + "\n[extra]\nx = 1\n", "extra"),
        (document(CLUSTER + "lease_period = 2.0\n"), "cluster.lease_period"),
        (document(nodes=[node_table(0), node_table(1, port="4001")]), "nodes[1].port"),
    ],
)
def test_unknown_keys_anywhere(tmp_path: Path, text: str, key: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"cluster.toml: {key}: unknown key")


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    message = error_of(tmp_path, document(CLUSTER + "lease_period = 2.0\n"))
    assert "did you mean 'lease_period_secs'?" in message


def test_missing_cluster_table(tmp_path: Path) -> None:
    message = error_of(tmp_path, document(cluster=""))
    assert message == "cluster.toml: cluster: missing required table [cluster]"


def test_missing_cluster_id(tmp_path: Path) -> None:
    message = error_of(tmp_path, document(cluster="[cluster]\n"))
    assert message == "cluster.toml: cluster.id: missing required key"


def test_missing_nodes(tmp_path: Path) -> None:
    message = error_of(tmp_path, CLUSTER)
    assert message.startswith("cluster.toml: nodes: missing required")


def test_nodes_not_an_array_of_tables(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'nodes = "node_0"\n' + CLUSTER)
    assert message.startswith("cluster.toml: nodes: expected [[nodes]] tables")


def test_empty_nodes_array(tmp_path: Path) -> None:
    message = error_of(tmp_path, "nodes = []\n" + CLUSTER)
    assert message == "cluster.toml: nodes: expected at least one [[nodes]] entry"


@pytest.mark.parametrize("key", ["name", "addresses", "client_port", "home_dir"])
def test_missing_node_keys(tmp_path: Path, key: str) -> None:
    nodes = [node_table(0), node_table(1), node_table(2, **{key: "<drop>"})]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message == f"cluster.toml: nodes[2].{key}: missing required key"


# -------------------------------------------------------------------------------------------
# Wrong types and ranges


def test_the_example_message_of_the_docs(tmp_path: Path) -> None:
    nodes = [node_table(0), node_table(1, client_port='"x"'), node_table(2)]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message == 'cluster.toml: nodes[1].client_port: expected an integer in 1..65535, got "x"'


@pytest.mark.parametrize(
    ("setting", "key", "problem"),
    [
        ("id = 5", "cluster.id", "expected a string, got an integer (5)"),
        ('id = ""', "cluster.id", 'expected a non-empty string, got ""'),
        ('id = "a\\tb"', "cluster.id", 'expected printable text, got "a\\tb"'),
        ('master_mode = "auto"', "cluster.master_mode", 'expected "elected" or "forced" or'),
        ("master_mode = true", "cluster.master_mode", "got true"),
        ('fsync = "yes"', "cluster.fsync", 'expected true or false, got "yes"'),
        ("fsync = 1", "cluster.fsync", "expected true or false, got 1"),
        ("preferred = 0", "cluster.preferred", "expected true or false, got 0"),
        ("lease_period_secs = true", "cluster.lease_period_secs", "got true"),
        ('lease_period_secs = "2"', "cluster.lease_period_secs", 'got "2"'),
        ("lease_period_secs = 0.05", "cluster.lease_period_secs", "in 0.1..60.0, got 0.05"),
        ("lease_period_secs = 61", "cluster.lease_period_secs", "in 0.1..60.0, got 61"),
        ("lease_period_secs = nan", "cluster.lease_period_secs", "got nan"),
        ("lease_period_secs = inf", "cluster.lease_period_secs", "got inf"),
        ("segment_entries_max = 0", "cluster.segment_entries_max", "got 0"),
        ("segment_entries_max = true", "cluster.segment_entries_max", "got true"),
        ("segment_entries_max = 1.5", "cluster.segment_entries_max", "got 1.5"),
        ("segment_bytes_max = 100", "cluster.segment_bytes_max", "in 4096..1099511627776"),
        ("collapse_threshold_entries = -1", "cluster.collapse_threshold_entries", "got -1"),
        ("segments_to_keep = 0", "cluster.segments_to_keep", "got 0"),
        ("max_batch_count = 0", "cluster.max_batch_count", "got 0"),
        ("max_batch_bytes = 0", "cluster.max_batch_bytes", "got 0"),
        ("max_queued_requests = 0", "cluster.max_queued_requests", "got 0"),
        ("peer_queue_items = 0", "cluster.peer_queue_items", "got 0"),
        ("peer_frame_bytes_max = 1000", "cluster.peer_frame_bytes_max", "got 1000"),
        ("peer_frame_bytes_max = 2147483648", "cluster.peer_frame_bytes_max", "..2147483647"),
        ("max_client_connections = 0", "cluster.max_client_connections", "got 0"),
        ("max_value_bytes = 0", "cluster.max_value_bytes", "got 0"),
        ("max_value_bytes = 2147483648", "cluster.max_value_bytes", "..2147483647"),
        ("max_request_bytes = 10", "cluster.max_request_bytes", "got 10"),
    ],
)
def test_bad_cluster_values(tmp_path: Path, setting: str, key: str, problem: str) -> None:
    cluster = CLUSTER.replace('id = "parakoon"\n', "") if setting.startswith("id ") else CLUSTER
    cluster = cluster.replace('master_mode = "elected"\n', "")
    cluster = cluster.replace("lease_period_secs = 2.0\n", "")
    message = error_of(tmp_path, document(cluster + setting + "\n"))
    assert message.startswith(f"cluster.toml: {key}: ")
    assert problem in message


def test_cluster_must_be_a_table(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'cluster = "x"\n' + "".join(node_table(i) for i in range(3)))
    assert message == 'cluster.toml: cluster: expected a table, got a string ("x")'


@pytest.mark.parametrize(
    ("field", "value", "key", "problem"),
    [
        ("name", "7", "name", "expected a string, got an integer (7)"),
        ("name", '""', "name", "expected a non-empty string"),
        (
            "name",
            '"node 1"',
            "name",
            'expected 1 to 64 characters from A-Z a-z 0-9 _ . -, got "node',
        ),
        ("name", '"' + "n" * 65 + '"', "name", "expected 1 to 64 characters"),
        ("addresses", '"127.0.0.1:4011"', "addresses", "expected a non-empty array"),
        ("addresses", "[]", "addresses", "expected a non-empty array"),
        ("addresses", "[4011]", "addresses[0]", 'expected "host:port"'),
        ("addresses", '["127.0.0.1"]', "addresses[0]", 'got "127.0.0.1"'),
        ("addresses", '[":4011"]', "addresses[0]", 'got ":4011"'),
        ("addresses", '["127.0.0.1:x"]', "addresses[0]", 'got "127.0.0.1:x"'),
        ("addresses", '["127.0.0.1:0"]', "addresses[0]", "port in 1..65535"),
        ("addresses", '["127.0.0.1:65536"]', "addresses[0]", 'got "127.0.0.1:65536"'),
        ("addresses", '["127.0.0.1:-1"]', "addresses[0]", 'got "127.0.0.1:-1"'),
        ("addresses", '["127.0.0.1:4011", 5]', "addresses[1]", "got 5"),
        ("addresses", '["::1:4011"]', "addresses[0]", "IPv6 hosts in brackets"),
        ("client_port", "0", "client_port", "expected an integer in 1..65535, got 0"),
        ("client_port", "65536", "client_port", "expected an integer in 1..65535, got 65536"),
        ("client_port", "true", "client_port", "expected an integer in 1..65535, got true"),
        ("client_port", "4001.0", "client_port", "got 4001.0"),
        ("home_dir", "1", "home_dir", "expected a string, got an integer (1)"),
        ("home_dir", '""', "home_dir", "expected a non-empty string"),
        ("compressor", '"gzip"', "compressor", 'expected "zstd" or "none", got "gzip"'),
        ("learner", '"no"', "learner", 'expected true or false, got "no"'),
        ("metrics_port", "0", "metrics_port", "expected an integer in 1..65535, got 0"),
        ("metrics_port", "false", "metrics_port", "got false"),
        ("redis_port", "70000", "redis_port", "expected an integer in 1..65535, got 70000"),
        ("redis_port", '"6379"', "redis_port", 'got "6379"'),
    ],
)
def test_bad_node_values(tmp_path: Path, field: str, value: str, key: str, problem: str) -> None:
    nodes = [node_table(0), node_table(1, **{field: value}), node_table(2)]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith(f"cluster.toml: nodes[1].{key}: ")
    assert problem in message


def test_node_entry_must_be_a_table(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'nodes = ["node_0"]\n' + CLUSTER)
    assert message.startswith("cluster.toml: nodes[0]: expected a table")


# -------------------------------------------------------------------------------------------
# Rules across keys


def test_duplicate_node_names(tmp_path: Path) -> None:
    nodes = [node_table(0), node_table(1), node_table(2, name='"node_0"')]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message == (
        "cluster.toml: nodes[2].name: duplicate node name 'node_0' (also nodes[0].name)"
    )


def test_duplicate_messaging_ports_on_one_host(tmp_path: Path) -> None:
    nodes = [node_table(0), node_table(1, addresses='["127.0.0.1:4010"]'), node_table(2)]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message == (
        "cluster.toml: nodes[1].addresses[0]: port 4010 on host '127.0.0.1' is already used by"
        " nodes[0].addresses[0]"
    )


def test_client_port_clashing_with_a_messaging_port(tmp_path: Path) -> None:
    nodes = [node_table(0), node_table(1), node_table(2, client_port="4011")]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith("cluster.toml: nodes[2].client_port: port 4011 on host '127.0.0.1'")
    assert message.endswith("already used by nodes[1].addresses[0]")


def test_client_port_equal_to_own_messaging_port(tmp_path: Path) -> None:
    nodes = [node_table(0, client_port="4010")]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith("cluster.toml: nodes[0].client_port: port 4010")


def test_metrics_port_clash(tmp_path: Path) -> None:
    nodes = [node_table(0), node_table(1, metrics_port="4000")]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith("cluster.toml: nodes[1].metrics_port: port 4000")
    assert message.endswith("already used by nodes[0].client_port")


def test_redis_port_clash(tmp_path: Path) -> None:
    nodes = [node_table(0), node_table(1, redis_port="4001")]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith("cluster.toml: nodes[1].redis_port: port 4001")
    assert message.endswith("already used by nodes[1].client_port")


def test_same_port_on_different_hosts_is_fine(tmp_path: Path) -> None:
    nodes = [
        node_table(0, addresses='["10.0.0.1:4010"]', client_port="4000"),
        node_table(1, addresses='["10.0.0.2:4010"]', client_port="4000"),
    ]
    config = load_text(tmp_path, document(nodes=nodes))
    assert [n.client_host for n in config.nodes] == ["10.0.0.1", "10.0.0.2"]


def test_wildcard_host_clashes_with_every_host(tmp_path: Path) -> None:
    nodes = [
        node_table(0, addresses='["0.0.0.0:4010"]'),
        node_table(1, addresses='["10.0.0.2:4010"]'),
    ]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith("cluster.toml: nodes[1].addresses[0]: port 4010")


def test_duplicate_home_dir(tmp_path: Path) -> None:
    nodes = [node_table(0), node_table(1, home_dir='"./data/../data/node_0"')]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith("cluster.toml: nodes[1].home_dir: folder ")
    assert "is also nodes[0].home_dir" in message


def test_forced_mode_without_master(tmp_path: Path) -> None:
    cluster = CLUSTER.replace('"elected"', '"forced"')
    message = error_of(tmp_path, document(cluster))
    assert message == (
        'cluster.toml: cluster.master: missing: master_mode = "forced" needs master = NAME'
    )


def test_master_naming_an_unknown_node(tmp_path: Path) -> None:
    cluster = CLUSTER.replace('"elected"', '"forced"') + 'master = "node_7"\n'
    message = error_of(tmp_path, document(cluster))
    assert message == (
        "cluster.toml: cluster.master: no node named 'node_7' (nodes: node_0, node_1, node_2)"
    )


def test_learner_as_master(tmp_path: Path) -> None:
    cluster = CLUSTER.replace('"elected"', '"forced"') + 'master = "node_1"\n'
    nodes = [node_table(0), node_table(1, learner="true"), node_table(2)]
    message = error_of(tmp_path, document(cluster, nodes))
    assert message == (
        "cluster.toml: cluster.master: node 'node_1' is a learner and cannot be master"
    )


def test_master_without_forced_or_preferred(tmp_path: Path) -> None:
    message = error_of(tmp_path, document(CLUSTER + 'master = "node_0"\n'))
    assert message.startswith("cluster.toml: cluster.master: only meaningful with")


def test_preferred_without_master(tmp_path: Path) -> None:
    message = error_of(tmp_path, document(CLUSTER + "preferred = true\n"))
    assert message == "cluster.toml: cluster.master: missing: preferred = true needs master = NAME"


def test_preferred_outside_elected_mode(tmp_path: Path) -> None:
    cluster = CLUSTER.replace('"elected"', '"forced"') + 'master = "node_0"\npreferred = true\n'
    message = error_of(tmp_path, document(cluster))
    assert message.startswith("cluster.toml: cluster.preferred: only meaningful with")


def test_master_in_readonly_mode(tmp_path: Path) -> None:
    cluster = CLUSTER.replace('"elected"', '"readonly"') + 'master = "node_0"\n'
    message = error_of(tmp_path, document(cluster))
    assert message == 'cluster.toml: cluster.master: not allowed with master_mode = "readonly"'


def test_no_voters(tmp_path: Path) -> None:
    nodes = [node_table(i, learner="true") for i in range(3)]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message == "cluster.toml: nodes: no voters: at least one node must have learner = false"


def test_batch_must_fit_in_a_peer_frame(tmp_path: Path) -> None:
    cluster = CLUSTER + "max_batch_bytes = 40000000\n"
    message = error_of(tmp_path, document(cluster))
    assert message.startswith("cluster.toml: cluster.max_batch_bytes: 40000000 is larger than")


def test_value_must_fit_in_a_request(tmp_path: Path) -> None:
    cluster = CLUSTER + "max_request_bytes = 4096\n"
    message = error_of(tmp_path, document(cluster))
    assert message.startswith("cluster.toml: cluster.max_value_bytes: 8388608 is larger than")


def test_first_problem_in_file_order_is_reported(tmp_path: Path) -> None:
    nodes = [node_table(0, client_port='"a"'), node_table(1, client_port='"b"')]
    message = error_of(tmp_path, document(nodes=nodes))
    assert message.startswith("cluster.toml: nodes[0].client_port:")


# -------------------------------------------------------------------------------------------
# check_home_dir


def test_check_home_dir_creates_missing_folders(tmp_path: Path) -> None:
    config = load_text(tmp_path, document())
    node = config.node("node_1")
    assert not node.home_dir.exists()
    check_home_dir(node)
    assert node.home_dir.is_dir()
    assert list(node.home_dir.iterdir()) == [], "the write probe is removed again"
    check_home_dir(node)  # a second start finds it in place


def test_check_home_dir_on_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    nodes = [node_table(0), node_table(1, home_dir='"taken"')]
    node = load_text(tmp_path, document(nodes=nodes)).nodes[1]
    with pytest.raises(ConfigError) as info:
        check_home_dir(node)
    assert str(info.value).startswith("cluster.toml: nodes[1].home_dir: ")
    assert "exists and is not a folder" in str(info.value)


def test_check_home_dir_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    nodes = [node_table(0), node_table(1), node_table(2, home_dir='"taken/node_2"')]
    node = load_text(tmp_path, document(nodes=nodes)).nodes[2]
    with pytest.raises(ConfigError) as info:
        check_home_dir(node)
    assert str(info.value).startswith("cluster.toml: nodes[2].home_dir: cannot create folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_home_dir_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        nodes = [node_table(0, home_dir='"locked"')]
        node = load_text(tmp_path, document(nodes=nodes)).nodes[0]
        with pytest.raises(ConfigError, match=r"nodes\[0\]\.home_dir: folder .* is not writable"):
            check_home_dir(node)
    finally:
        locked.chmod(stat.S_IRWXU)


def test_check_home_dir_on_a_read_only_mount() -> None:
    # /proc refuses new files even to root: the probe write, not the mode bits, finds that out.
    proc = Path("/proc/self")
    if not proc.is_dir():
        pytest.skip("no /proc on this system")
    node = NodeConfig(
        name="n", addresses=(("127.0.0.1", 1),), client_port=2, home_dir=proc, index=4
    )
    with pytest.raises(ConfigError) as info:
        check_home_dir(node)
    assert str(info.value).startswith("cluster.toml: nodes[4].home_dir: folder '/proc/self'")
    assert "not writable" in str(info.value)
