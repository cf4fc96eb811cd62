"""Cluster identity (R9): the bootstrap decision table and the identity file on real disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parakoon_node.runtime.identity import (
    Identity,
    IdentityError,
    IdentityStore,
    PeerIdentities,
    PeerIdentity,
    Status,
    decide,
    history_uuid,
    mismatch,
)

VOTERS = ["a", "b", "c"]


def founding(inc: str, *, seed: bool = False) -> Identity:
    return Identity(
        cluster_name="pk", cluster_uuid=None, incarnation=inc, status=Status.FOUNDING, seed=seed
    )


def peer(
    inc: str,
    *,
    uuid: str | None = None,
    status: Status = Status.FOUNDING,
    founders: dict[str, str] | None = None,
    has_state: bool = False,
) -> PeerIdentity:
    return PeerIdentity(
        cluster_uuid=uuid,
        incarnation=inc,
        status=status,
        founders=founders or {},
        has_state=has_state,
    )


def test_a_new_cluster_forms_only_when_every_voter_is_here_and_empty() -> None:
    mine = founding("ia")
    wait = decide(mine, "a", VOTERS, {"b": peer("ib")}, has_state=False)
    assert wait.identity is None and "missing ['c']" in wait.reason
    formed = decide(mine, "a", VOTERS, {"b": peer("ib"), "c": peer("ic")}, has_state=False)
    assert formed.identity is not None and not formed.joined
    assert formed.identity.status is Status.VOTER
    assert formed.identity.founders == {"a": "ia", "b": "ib", "c": "ic"}
    # Every founder computes the same history from the same incarnations.
    other = decide(founding("ib"), "b", VOTERS, {"a": peer("ia"), "c": peer("ic")}, has_state=False)
    assert other.identity is not None
    assert other.identity.cluster_uuid == formed.identity.cluster_uuid
    assert formed.identity.cluster_uuid == history_uuid("pk", {"a": "ia", "b": "ib", "c": "ic"})


def test_empty_nodes_next_to_a_history_rebuild_and_never_form_their_own() -> None:
    uuid = "u1"
    founders = {"a": "ia", "b": "ib-old", "c": "ic-old"}
    # b lost its disk (new incarnation); c is down. b must not form anything with anyone.
    d = decide(
        founding("ib-new"),
        "b",
        VOTERS,
        {"a": peer("ia", uuid=uuid, status=Status.VOTER, founders=founders, has_state=True)},
        has_state=False,
    )
    assert d.identity is not None and d.joined
    assert d.identity.status is Status.REBUILDING and d.identity.cluster_uuid == uuid
    # Two empty nodes that only see each other wait: the node with the history is missing.
    wait = decide(founding("ib-new"), "b", VOTERS, {"c": peer("ic-new")}, has_state=False)
    assert wait.identity is None and "missing ['a']" in wait.reason


def test_a_founder_that_finished_late_joins_as_a_voter() -> None:
    founders = {"a": "ia", "b": "ib", "c": "ic"}
    d = decide(
        founding("ic"),
        "c",
        VOTERS,
        {"a": peer("ia", uuid="u", status=Status.VOTER, founders=founders)},
        has_state=False,
    )
    assert d.identity is not None and d.identity.status is Status.VOTER and d.joined


def test_two_nodes_with_data_never_found_together() -> None:
    d = decide(
        founding("ia", seed=True),
        "a",
        VOTERS,
        {"b": peer("ib", has_state=True), "c": peer("ic")},
        has_state=True,
    )
    assert d.identity is None and "force-new-cluster" in d.reason


def test_a_seed_founds_with_empty_voters() -> None:
    d = decide(
        founding("ia", seed=True), "a", VOTERS, {"b": peer("ib"), "c": peer("ic")}, has_state=True
    )
    assert d.identity is not None and d.identity.status is Status.VOTER


def test_a_learner_waits_for_the_voters_then_rebuilds_before_it_acknowledges() -> None:
    # Rebuilding, not voter: the replicated membership may have promoted it since its
    # cluster.toml was written, and a promoted node with a new disk must not vote at once.
    assert decide(founding("il"), "l", VOTERS, {}, has_state=False).identity is None
    d = decide(
        founding("il"),
        "l",
        VOTERS,
        {"a": peer("ia", uuid="u", status=Status.VOTER, founders={"a": "ia"})},
        has_state=False,
    )
    assert d.identity is not None and d.identity.status is Status.REBUILDING


def test_peers_of_different_histories_are_refused_naming_both() -> None:
    mine = Identity(cluster_name="pk", cluster_uuid="u1", incarnation="i1" * 8, status=Status.VOTER)
    why = mismatch(mine, peer("i2" * 8, uuid="u2", status=Status.VOTER))
    assert why is not None and "u1" in why and "u2" in why and "home_dir" in why
    assert mismatch(mine, peer("i2", uuid="u1", status=Status.VOTER)) is None
    assert mismatch(mine, peer("i2")) is None  # a founding peer may still join us
    gate = PeerIdentities(lambda: mine, has_state=lambda: True)
    assert gate.admit("b", {"uuid": "u2"}) is not None, "malformed identity is refused"
    assert gate.admit("b", peer("x").founders) is not None
    wire = {"uuid": "u1", "inc": "x", "status": "voter", "founders": {}, "has_state": True}
    assert gate.admit("b", wire) is None and gate.peers["b"].cluster_uuid == "u1"
    assert gate.local()["uuid"] == "u1"


def test_the_identity_file_round_trips_and_bad_files_name_themselves(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path, "pk")
    assert store.load() is None
    identity, why = store.open_at_start(wal_existed=False, has_state=False)
    assert identity.status is Status.FOUNDING and "empty" in why
    assert store.load() == identity
    # The same home_dir next time: resumed as it was.
    again, _ = store.open_at_start(wal_existed=True, has_state=False)
    assert again == identity
    (tmp_path / "identity.json").write_text("{not json")
    with pytest.raises(IdentityError, match=r"identity\.json"):
        store.load()
    obj = {
        "format": 1,
        "cluster_name": "other",
        "cluster_uuid": None,
        "incarnation": "i",
        "status": "voter",
        "founders": {},
    }
    (tmp_path / "identity.json").write_text(json.dumps(obj))
    with pytest.raises(IdentityError, match="belongs to cluster 'other'"):
        store.load()


def test_a_voter_whose_wal_is_gone_rebuilds(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path, "pk")
    voter = Identity(
        cluster_name="pk", cluster_uuid="u", incarnation="i", status=Status.VOTER, founders={}
    )
    store.save(voter)
    identity, why = store.open_at_start(wal_existed=False, has_state=False)
    assert identity.status is Status.REBUILDING and identity.incarnation != "i"
    assert "WAL is gone" in why
    assert store.load() == identity


def test_data_from_before_identity_files_is_kept_as_a_voter(tmp_path: Path) -> None:
    identity, _ = IdentityStore(tmp_path, "pk").open_at_start(wal_existed=True, has_state=True)
    assert identity.status is Status.VOTER and identity.cluster_uuid is not None


def test_force_new_cluster_makes_a_seed(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path, "pk")
    store.save(Identity(cluster_name="pk", cluster_uuid="u", incarnation="i", status=Status.VOTER))
    seed = store.force_new_cluster(has_state=True)
    assert seed.status is Status.FOUNDING and seed.seed and seed.cluster_uuid is None
    assert store.load() == seed
