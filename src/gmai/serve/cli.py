"""`gmai serve` and `gmai demo-ui` (placeholders until serving lands)."""


def serve_command(checkpoint: str) -> None:
    raise SystemExit("gmai serve: not available yet")


def demo_ui_command(checkpoint: str) -> None:
    raise SystemExit("gmai demo-ui: not available yet")
