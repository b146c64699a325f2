"""embedding-gateway."""
