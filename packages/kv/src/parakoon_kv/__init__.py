"""parakoon_kv."""
