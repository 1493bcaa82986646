"""tsp: TSP/TAC clip features from videos, reproducing the reference recipe in one decoding pass.

The public API is imported lazily, so that ``tsp --help`` does not pay for importing torch::

    from tsp_cli import extract_features, fetch
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "extract_features": "tsp_cli.pipeline.engine",
    "plan_extraction": "tsp_cli.pipeline.engine",
    "run_extraction": "tsp_cli.pipeline.engine",
    "RunSummary": "tsp_cli.pipeline.engine",
    "Shard": "tsp_cli.pipeline.sharding",
    "ClipSettings": "tsp_cli.pipeline.sampling",
    "fetch": "tsp_cli.models.cache",
    "TspError": "tsp_cli.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        return getattr(module, name)
    raise AttributeError(f"module 'tsp_cli' has no attribute {name!r}")
