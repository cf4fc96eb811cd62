"""parakoon_queue."""
