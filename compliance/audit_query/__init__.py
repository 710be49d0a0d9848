"""Read side of the routing log: search, plain-words explanations and period reports."""
