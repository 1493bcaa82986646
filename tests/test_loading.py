"""Checkpoints load safely (weights_only + a one-class allow-list) and name their backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tsp_cli.errors import CheckpointError
from tsp_cli.models.backbones import build_backbone
from tsp_cli.models.loading import detect_backbone, load_backbone, read_backbone_state


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"features.stem.0.weight": torch.zeros(1)}, "payload": Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"objects other than tensors \(posix.system\)") as refused:
        read_backbone_state(evil)
    assert not marker.exists()
    assert "weights_only" not in str(refused.value)  # torch's advice to unpickle anyway is never passed on


@pytest.mark.parametrize("backbone", ["r2plus1d_34", "r2plus1d_18", "r3d_18"])
def test_backbone_is_detected_from_the_tensors(backbone: str) -> None:
    assert detect_backbone(build_backbone(backbone).state_dict()) == backbone


def test_released_layout_loads_with_its_namespace_and_ignores_heads(r3d_checkpoint: Path) -> None:
    state = read_backbone_state(r3d_checkpoint)
    assert "stem.0.weight" in state and not any(k.startswith(("fc", "features.")) for k in state)
    model, backbone = load_backbone(r3d_checkpoint)
    assert backbone == "r3d_18" and not model.training
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 112, 112)).shape == (1, 512)


def test_a_wrong_backbone_names_the_one_the_file_holds(r3d_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="holds a r3d_18 backbone, not r2plus1d_18; pass `backbone` r3d_18"):
        load_backbone(r3d_checkpoint, "r2plus1d_18")


def test_truncated_and_missing_files_are_one_sentence_errors(r3d_checkpoint: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(r3d_checkpoint.read_bytes()[:100_000])
    with pytest.raises(
        CheckpointError, match=r"is cut short \(100000 bytes, its zip archive has no end\); download"
    ) as cut:
        read_backbone_state(truncated)
    assert cut.value.path == truncated  # the file at fault, for callers that handle it
    with pytest.raises(CheckpointError, match="does not exist") as missing:
        read_backbone_state(tmp_path / "nope.pth")
    assert missing.value.path == tmp_path / "nope.pth"


def test_a_plain_state_dict_without_prefix_loads(tmp_path: Path) -> None:
    model = build_backbone("r3d_18")
    path = tmp_path / "plain.pth"
    torch.save(model.state_dict(), path)
    loaded, backbone = load_backbone(path)
    assert backbone == "r3d_18"
    assert torch.equal(loaded.state_dict()["stem.0.weight"], model.state_dict()["stem.0.weight"])


def test_r2plus1d_34_uses_batchnorm_eps_1e3_and_its_own_middle_widths() -> None:
    model = build_backbone("r2plus1d_34")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    # layer2's first block: 64->128 then 128->128, each with its own (in*out*27)//(in*9+3*out)
    block = model.layer2[0]
    assert block.conv1[0][0].out_channels == (64 * 128 * 27) // (64 * 9 + 3 * 128)
    assert block.conv2[0][0].out_channels == (128 * 128 * 27) // (128 * 9 + 3 * 128)


def _write_pickle(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"a": 1}))


def _write_resnet(path: Path) -> None:
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("hi\n"), r"is not a PyTorch checkpoint \(neither the zip archive nor the pickle"),
        (lambda p: p.write_bytes(b"garbage garbage"), "is not a PyTorch checkpoint"),
        (lambda p: p.write_bytes(b""), "is empty; download or copy it again"),
        (lambda p: p.mkdir(), "is a folder; give the checkpoint file itself"),
        (_write_pickle, "is a plain Python pickle, not a checkpoint written by torch.save"),
        (lambda p: torch.save({"a": 1}, p), r"holds no state dict of tensors \(a dict of 'a'\)"),
        (_write_resnet, r"holds the weights of another network: most of its 120 tensors \(such as 'conv1.weight'\)"),
        (
            lambda p: torch.save({"model": {"features.stem.0.weight": torch.zeros(64, 3, 3, 7, 7)}}, p),
            r"does not fit the r3d_18 backbone: 119 of its tensors missing \(such as 'stem.1.weight'\)",
        ),
    ],
    ids=["text", "garbage", "empty", "folder", "plain-pickle", "no-tensors", "other-network", "partial"],
)
def test_what_a_file_that_is_no_usable_checkpoint_is_said_in_one_sentence(tmp_path: Path, make, message) -> None:
    import warnings

    path = tmp_path / "x.pth"
    make(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch warning leaks through
        with pytest.raises(CheckpointError, match=message) as refused:
            load_backbone(path)
    text = str(refused.value)
    assert "\n" not in text and text.endswith(".") and "weights_only" not in text


def test_a_tensor_of_another_shape_is_named_with_both_shapes(tmp_path: Path) -> None:
    state = build_backbone("r3d_18").state_dict()
    state["fc_like.weight"] = torch.zeros(2)
    state["layer4.1.conv2.1.weight"] = torch.zeros(3)  # a batch norm's weight
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as refused:
        load_backbone(path)
    assert "1 extra tensor (such as 'fc_like.weight')" in str(refused.value)
    assert "1 tensor of another shape (such as 'layer4.1.conv2.1.weight': 3, not 512)" in str(refused.value)
