"""``parakoon status``'s choice of the cluster's master from the nodes' answers (pure)."""

from __future__ import annotations

from typing import Any

from parakoon_node.commands.status_cli import master_of


def row(name: str, view: str | None, state: str, **kw: Any) -> dict[str, Any]:
    out = {
        "name": name,
        "master_view": view,
        "state": state,
        "reachable": True,
        "voter": True,
        "role": "master" if state == "Stable_master" else "follower",
    }
    out.update(kw)
    return out


def test_every_voter_agreeing_names_the_master() -> None:
    nodes = [
        row("n0", "n2", "Slave_steady_state"),
        row("n1", "n2", "Slave_steady_state"),
        row("n2", "n2", "Stable_master"),
    ]
    assert master_of(nodes, 2) == "n2"


def test_a_cut_off_candidate_does_not_hide_the_master() -> None:
    nodes = [
        row("n0", None, "Wait_for_promises", role="candidate"),
        row("n1", "n2", "Slave_steady_state"),
        row("n2", "n2", "Stable_master"),
    ]
    assert master_of(nodes, 2) == "n2"


def test_no_quorum_naming_it_means_no_master() -> None:
    nodes = [
        row("n0", None, "Wait_for_promises", role="candidate"),
        row("n1", None, "Wait_for_promises", role="candidate"),
        row("n2", "n2", "Stable_master"),
    ]
    assert master_of(nodes, 2) is None
    # Unreachable nodes, learners and removed nodes do not count towards the quorum.
    nodes[0] = row("n0", "n2", "Slave_steady_state", reachable=False)
    assert master_of(nodes, 2) is None
    nodes[0] = row("n0", "n2", "Slave_steady_state", voter=False)
    assert master_of(nodes, 2) is None
    nodes[0] = row("n0", "n2", "Slave_steady_state", role="removed")
    assert master_of(nodes, 2) is None


def test_a_named_node_that_does_not_claim_it_is_not_the_master() -> None:
    nodes = [
        row("n0", "n2", "Slave_steady_state"),
        row("n1", "n2", "Slave_steady_state"),
        row("n2", None, "Wait_for_promises", role="candidate"),
    ]
    assert master_of(nodes, 2) is None
