"""optaxlab.train."""
