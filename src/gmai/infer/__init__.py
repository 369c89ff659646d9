"""gmai.infer."""
