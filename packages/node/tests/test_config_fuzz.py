"""Whatever a cluster.toml holds, loading it gives a config or one clean ConfigError line.

The promise of ``load_config`` to the command line is "one message naming the key, never a
traceback". These property tests hold it to that for arbitrary TOML documents: random values put
in place of the valid ones, random extra keys and tables, and random bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from parakoon_node.runtime.config import _CLUSTER_KEYS, ClusterConfig, ConfigError, parse_config

BASE: dict[str, Any] = {
    "cluster": {"id": "parakoon", "master_mode": "elected", "lease_period_secs": 2.0},
    "nodes": [
        {
            "name": f"node_{i}",
            "addresses": [f"127.0.0.1:{4010 + i}"],
            "client_port": 4000 + i,
            "home_dir": f"data/node_{i}",
        }
        for i in range(3)
    ],
}
#: Every key ``[cluster]`` accepts (taken from the parser, so a new key is fuzzed too) and one it
#: does not.
CLUSTER_KEYS = [*_CLUSTER_KEYS, "bogus"]
NODE_KEYS = [
    "name",
    "addresses",
    "client_port",
    "home_dir",
    "compressor",
    "learner",
    "metrics_port",
    "port",
]


def toml_value(value: Any) -> str:
    """A TOML inline rendering of a JSON-like value (enough for these tests)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are valid TOML basic-string escapes (ensure_ascii=False: no \\ud800
        # surrogate pairs, which TOML refuses).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    items = (f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


def toml_document(document: dict[str, Any]) -> str:
    lines = []
    for key, value in document.items():
        lines.append(f"{toml_value(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "elected",
            "forced",
            "readonly",
            "node_0",
            "node_1",
            "zstd",
            "none",
            "127.0.0.1:4011",
            "[::1]:1",
            "0.0.0.0:4000",
            "data/node_0",
            "",
        ]
    ),
)
# Mostly values that could be right somewhere (so that many documents get past the first
# check and exercise the rules across keys), some of any shape at all.
plausible = st.one_of(
    st.integers(min_value=0, max_value=70_000),
    st.floats(min_value=0.0, max_value=100.0),
    st.booleans(),
    st.sampled_from(
        [
            "elected",
            "forced",
            "readonly",
            "node_0",
            "node_1",
            "node_2",
            "zstd",
            "none",
            "127.0.0.1:4011",
            "127.0.0.1:4000",
            "[::1]:1",
            "0.0.0.0:4001",
            "data/node_0",
            "data/other",
            "x",
        ]
    ),
    st.lists(st.sampled_from(["127.0.0.1:4010", "10.0.0.1:4010", "h:1"]), max_size=2),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
values = st.one_of(plausible, plausible, anything)


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = json.loads(json.dumps(BASE))
    nodes = document["nodes"]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        where = draw(st.sampled_from(["cluster", "node", "drop"]))
        if where == "cluster":
            document["cluster"][draw(st.sampled_from(CLUSTER_KEYS))] = draw(values)
            continue
        node = nodes[draw(st.integers(min_value=0, max_value=len(nodes) - 1))]
        if where == "node":
            node[draw(st.sampled_from(NODE_KEYS))] = draw(values)
        elif node:
            node.pop(draw(st.sampled_from(sorted(node))))
    # Last, and only sometimes, replace a whole top-level entry (the loop above needs them).
    if draw(st.integers(min_value=0, max_value=9)) == 7:
        document[draw(st.sampled_from(["cluster", "nodes", "extra"]))] = draw(values)
    return document  # type: ignore[no-any-return]  # hypothesis draws are Any


def check(text: str) -> None:
    try:
        config = parse_config(text, source="cluster.toml", base_dir=Path("/srv/parakoon"))
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("cluster.toml: ")
        assert "\n" not in message and "\r" not in message
    else:
        assert isinstance(config, ClusterConfig)
        assert config.voters
        assert len(set(config.node_names)) == len(config.nodes)


@settings(max_examples=300, deadline=None)
@given(mutated_documents())
def test_mutated_documents_load_or_fail_cleanly(document: dict[str, Any]) -> None:
    check(toml_document(document))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_loads_or_fails_cleanly(text: str) -> None:
    check(text)
