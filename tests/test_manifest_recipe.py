"""The manifest compares the recipe a folder was started with, and still accepts folders from before it was recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsp_cli.errors import UsageError
from tsp_cli.models.recipe import TSP_RECIPE, Recipe
from tsp_cli.pipeline import store
from tsp_cli.pipeline.extraction import recipe_settings

BASE = {"checkpoint_sha256": "abc", "backbone": "r3d_18", "stride": 16, "precision": "fp32"}


def settings_for(recipe: Recipe) -> dict:
    return {**BASE, **recipe_settings(recipe)}


def test_a_folder_started_with_another_crop_is_refused_naming_it(tmp_path: Path) -> None:
    store.claim_output_folder(tmp_path, settings_for(TSP_RECIPE), {})
    store.claim_output_folder(tmp_path, settings_for(TSP_RECIPE), {})  # the same recipe: accepted
    with pytest.raises(UsageError, match=r"crop 112 there vs 128 now"):
        store.claim_output_folder(tmp_path, settings_for(Recipe(crop=128)), {})


def test_a_manifest_written_before_the_recipe_was_recorded_still_resumes(tmp_path: Path) -> None:
    store.claim_output_folder(tmp_path, {**BASE, "clip_len": 16, "frame_rate": 15.0}, {})
    manifest = json.loads((tmp_path / store.MANIFEST_NAME).read_text())
    assert "crop" not in manifest["settings"]
    assert store.claim_output_folder(tmp_path, settings_for(TSP_RECIPE), {}) == []
    with pytest.raises(UsageError, match=r"clip_len 16 there vs 8 now"):
        store.claim_output_folder(tmp_path, settings_for(Recipe(clip_len=8)), {})
