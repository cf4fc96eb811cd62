"""parakoon_client."""
