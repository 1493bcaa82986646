"""``tsp extract`` (being written for issue 2)."""


def extract() -> None:
    """Extract clip features (not ready yet)."""
