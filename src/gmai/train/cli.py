"""`gmai train` (placeholder until training lands)."""


def train_command(recipe: str) -> None:
    raise SystemExit("gmai train: not available yet")
