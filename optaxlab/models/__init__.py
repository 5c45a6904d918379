"""optaxlab.models."""
