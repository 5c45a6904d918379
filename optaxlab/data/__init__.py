"""optaxlab.data."""
