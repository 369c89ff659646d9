"""gmai.train."""
