"""gmai.rl."""
