"""tsp: TSP/TAC clip features from videos, reproducing the reference recipe in one decoding pass."""

__version__ = "0.1.0"
