"""tsp: TSP/TAC clip features from videos, reproducing the reference recipe in one decoding pass.

The public API is imported lazily, so that ``tsp --help`` does not pay for importing torch::

    import tsp_cli
    tsp_cli.list_models()                                     # the checkpoints known by name
    model = tsp_cli.load_model("r2plus1d_34-tsp_on_activitynet", device="cuda")  # or a local path
    features = model(model.recipe.transform(frames))         # uint8 T×H×W×3 -> 1×512
    tsp_cli.extract_features(["videos/"], "out/", checkpoint="model.pth")       # what `tsp extract` runs
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "extract_features": "tsp_cli.pipeline.extraction",
    "plan_extraction": "tsp_cli.pipeline.extraction",
    "run_extraction": "tsp_cli.pipeline.extraction",
    "ExtractionOptions": "tsp_cli.pipeline.extraction",
    "RunSummary": "tsp_cli.pipeline.events",
    "Shard": "tsp_cli.pipeline.sharding",
    "ClipSettings": "tsp_cli.pipeline.sampling",
    "fetch": "tsp_cli.models.cache",
    "list_models": "tsp_cli.models.api",
    "load_model": "tsp_cli.models.api",
    "TspModel": "tsp_cli.models.api",
    "Recipe": "tsp_cli.models.recipe",
    "TspError": "tsp_cli.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        return getattr(module, name)
    raise AttributeError(f"module 'tsp_cli' has no attribute {name!r}")
