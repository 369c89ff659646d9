"""gmai.eval."""
