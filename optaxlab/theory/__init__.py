"""optaxlab.theory."""
