"""parakoon_wal."""
