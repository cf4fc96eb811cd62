"""parakoon_node."""
