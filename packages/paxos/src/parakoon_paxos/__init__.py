"""parakoon_paxos."""
