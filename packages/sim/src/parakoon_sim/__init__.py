"""parakoon_sim."""
