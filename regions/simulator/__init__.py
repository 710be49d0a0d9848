"""regions/simulator package."""
