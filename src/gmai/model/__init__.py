"""gmai.model."""
