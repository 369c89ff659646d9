"""gmai.serve."""
