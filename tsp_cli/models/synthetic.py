"""Seeded checkpoints laid out like the released ones, for tests, benchmarks and the demo.

``write_checkpoint(path, "r3d_18")`` writes what TSP's training script saves:
``{"model": {"features.…", "fc1.…", "fc2.…"}, "optimizer", "lr_scheduler", "epoch",
"args": argparse.Namespace}``; ``heads=1`` writes a TAC-style single ``fc.`` head instead.
BatchNorm statistics are moved away from their defaults, so that loading them matters. The
weights are random: features from such a file are not meaningful.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from tsp_cli.atomic import atomic_path
from tsp_cli.models.backbones import FEATURE_DIM, build_backbone


def write_checkpoint(path: Path | str, backbone: str, *, heads: int = 2, seed: int = 0) -> Path:
    """Write a seeded random checkpoint of ``backbone`` to ``path`` (atomically) and return the path."""
    torch.manual_seed(seed)
    model = build_backbone(backbone)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d) and module.running_var is not None:
                nn.init.uniform_(module.weight, 0.6, 1.0)
                module.running_var.uniform_(0.8, 1.6)
    state = {f"features.{key}": value for key, value in model.state_dict().items()}
    for head, classes in ({"fc": 200} if heads == 1 else {"fc1": 200, "fc2": 2}).items():
        state[f"{head}.weight"] = torch.randn(classes, FEATURE_DIM) * 0.01
        state[f"{head}.bias"] = torch.zeros(classes)
    args = argparse.Namespace(backbone=backbone, clip_len=16, frame_rate=15)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        torch.save(
            {
                "model": state,
                "optimizer": {"state": {}, "param_groups": []},
                "lr_scheduler": {},
                "epoch": 1,
                "args": args,
            },
            temp,
        )
    return path
