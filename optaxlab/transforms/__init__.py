"""optaxlab.transforms."""
