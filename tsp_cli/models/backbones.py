"""The three TSP backbones, built with no pretrained download, returning 512-d clip features.

R(2+1)D-18 and R3D-18 are torchvision's definitions. R(2+1)D-34 follows the IG65M/VMZ models
it was trained from: each (2+1)D convolution computes its middle width from its own input and
output widths (torchvision reuses the block's first width for both), and every BatchNorm has
eps 1e-3 (the Caffe2 default).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.video import r2plus1d_18, r3d_18
from torchvision.models.video.resnet import BasicBlock, R2Plus1dStem, VideoResNet

from tsp_cli.models.registry import BACKBONES, FEATURE_DIM

__all__ = ["BACKBONES", "FEATURE_DIM", "build_backbone"]


class Conv2Plus1D34(nn.Sequential):
    """(2+1)D convolution of R(2+1)D-34, whose middle width depends on its own in/out widths."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1) -> None:
        del midplanes  # recomputed below, which is what distinguishes the 34-layer model
        midplanes = (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)
        super().__init__(
            nn.Conv3d(in_planes, midplanes, (1, 3, 3), (1, stride, stride), (0, padding, padding), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, (3, 1, 1), (stride, 1, 1), (padding, 0, 0), bias=False),
        )

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return (stride, stride, stride)


def _r2plus1d_34() -> VideoResNet:
    model = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D34] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = 1e-3
    return model


def build_backbone(name: str) -> VideoResNet:
    """The named backbone with random weights and its classifier replaced by the identity."""
    builders = {
        "r2plus1d_34": _r2plus1d_34,
        "r2plus1d_18": lambda: r2plus1d_18(weights=None),
        "r3d_18": lambda: r3d_18(weights=None),
    }
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    model = builders[name]()
    model.fc = nn.Identity()
    return model
