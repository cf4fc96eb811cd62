"""parakoon_conn."""
