"""gmai.data.sources."""
