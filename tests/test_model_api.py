"""The three-line model API: ``list_models``, ``load_model``, ``model.recipe.transform``, ``model(clips)``."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

import tsp_cli
from tests.videos import make_video
from tsp_cli.errors import CheckpointError, ModelNotFoundError
from tsp_cli.models.recipe import TSP_RECIPE, Recipe
from tsp_cli.pipeline.transform import FrameTransform


def test_list_models_names_the_released_checkpoints_and_filters_like_torchvision() -> None:
    names = tsp_cli.list_models()
    assert len(names) == 13 and names[0] == "r2plus1d_34-tsp_on_activitynet"
    assert tsp_cli.list_models("r3d_18*") == [
        "r3d_18-tsp_on_activitynet",
        "r3d_18-tac_on_activitynet",
        "r3d_18-tac_on_kinetics",
    ]


def test_every_released_checkpoint_carries_the_reference_recipe() -> None:
    from tsp_cli.models.registry import RELEASED

    assert {checkpoint.recipe for checkpoint in RELEASED} == {TSP_RECIPE}
    assert (TSP_RECIPE.clip_len, TSP_RECIPE.frame_rate, TSP_RECIPE.resize, TSP_RECIPE.crop) == (
        16,
        15.0,
        (128, 171),
        112,
    )
    assert TSP_RECIPE.crop_top_left == (8, 30)  # round-half-even of 29.5, as the reference's CenterCrop


def test_recipe_transform_is_the_reference_formula_frame_by_frame() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 90, 120, 3), dtype=np.uint8)
    clip = TSP_RECIPE.transform(frames)
    assert clip.shape == (3, 4, 112, 112) and clip.dtype == torch.float32
    for t in range(4):
        assert torch.allclose(clip[:, t], FrameTransform.for_size(90, 120, TSP_RECIPE)(frames[t]), atol=3e-5, rtol=0)
    batch = TSP_RECIPE.transform(np.stack([frames, frames[::-1]]))
    assert batch.shape == (2, 3, 4, 112, 112)
    assert torch.equal(batch[0], clip) and torch.equal(batch[1, :, 0], clip[:, 3])


def test_recipe_transform_refuses_what_is_not_uint8_rgb() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        Recipe().transform(np.zeros((4, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        Recipe().transform(np.zeros((32, 32, 3), dtype=np.uint8))


def test_load_model_reads_a_local_checkpoint_and_maps_clips_to_features(r3d_checkpoint: Path) -> None:
    model = tsp_cli.load_model(r3d_checkpoint)
    assert isinstance(model, tsp_cli.TspModel) and not model.training
    assert (model.architecture, model.name, model.recipe) == ("r3d_18", r3d_checkpoint.name, TSP_RECIPE)
    clip = torch.zeros(3, 16, 112, 112)
    with torch.no_grad():
        one, two = model(clip), model(torch.stack([clip, clip]))
    assert one.shape == (1, 512) and two.shape == (2, 512)
    assert torch.allclose(two[1], one[0], atol=1e-5)
    with pytest.raises(ValueError, match="3×T×H×W"):
        model(torch.zeros(16, 112, 112))


def test_load_model_by_name_goes_through_the_hash_checked_cache(
    r3d_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tsp_cli.models.cache import file_sha256

    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.mine]\nbackbone = "r3d_18"\nurl = "{r3d_checkpoint.as_uri()}"\nsha256 = "{file_sha256(r3d_checkpoint)}"\n'
    )
    monkeypatch.setenv("TSP_MODELS_FILE", str(models))
    monkeypatch.setenv("TSP_CACHE_DIR", str(tmp_path / "cache"))
    assert tsp_cli.list_models("mine") == ["mine"]
    model = tsp_cli.load_model("mine")
    assert model.name == "mine" and model.architecture == "r3d_18"
    assert model.path.is_relative_to(tmp_path / "cache")


def test_unknown_names_and_missing_files_are_distinct_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as raised:
        tsp_cli.load_model("r3d_18-tsp_on_activitynt")
    assert isinstance(raised.value, LookupError)
    assert raised.value.suggestions[0] == "r3d_18-tsp_on_activitynet"
    with pytest.raises(CheckpointError, match="does not exist"):
        tsp_cli.load_model(tmp_path / "absent.pth")


@pytest.mark.slow
def test_own_code_with_the_recipe_reproduces_tsp_extract_for_a_clip(r3d_checkpoint: Path, tmp_path: Path) -> None:
    """A user decodes frames with PyAV, picks the recipe's frames, and gets ``tsp extract``'s row."""
    video = make_video(tmp_path / "videos" / "walk.mp4", frames=70, fps=30, size=(96, 72))
    summary = tsp_cli.extract_features([video], tmp_path / "out", checkpoint=r3d_checkpoint, workers=0, device="cpu")
    assert (summary.done, summary.failed) == (1, 0)
    extracted = np.load(tmp_path / "out" / "walk.npy")
    assert extracted.shape == (2, 512)  # 70 frames at 30 fps = 35 resampled frames: clips at 0 and 16

    with av.open(str(video)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    model = tsp_cli.load_model(r3d_checkpoint)
    step = 30 // int(model.recipe.frame_rate)  # 30 fps sampled at 15 fps: every other frame
    clip_len = model.recipe.clip_len
    with torch.no_grad():
        for k, row in enumerate(extracted):
            first = k * 16 * step  # stride 16 resampled frames
            clip = model.recipe.transform(frames[first : first + clip_len * step : step])
            mine = model(clip)[0].numpy()
            spread = np.abs(extracted - extracted.mean(axis=0)).max()
            assert np.abs(mine - row).max() / spread < 1e-4
