"""compliance/store package."""
