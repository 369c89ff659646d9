"""gmai.data."""
