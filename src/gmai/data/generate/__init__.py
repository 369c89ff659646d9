"""gmai.data.generate."""
