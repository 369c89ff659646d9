"""gmai.eval.benchmarks."""
