"""tsp: TSP/TAC clip features from videos, reproducing the reference recipe in one decoding pass.

The public API is imported lazily, so that ``tsp --help`` does not pay for importing torch::

    from tsp_cli import extract_features, fetch

(``extract_features`` is ``tsp_cli.extract.extract``: the module ``tsp_cli.extract`` keeps its name.)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "extract_features": "tsp_cli.extract",
    "plan_extraction": "tsp_cli.extract",
    "run_extraction": "tsp_cli.extract",
    "RunSummary": "tsp_cli.extract",
    "Shard": "tsp_cli.sharding",
    "ClipSettings": "tsp_cli.sampling",
    "fetch": "tsp_cli.weights",
    "TspError": "tsp_cli.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        return getattr(module, "extract" if name == "extract_features" else name)
    raise AttributeError(f"module 'tsp_cli' has no attribute {name!r}")
