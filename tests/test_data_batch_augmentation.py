"""Training batches are augmented as a whole (adlight.data.batch_augmentation) with the
distribution of the per-image torchvision transforms, and read from one uint8 image cache."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from adlight.data import DigitsDataModule, LoaderOptions, MVTecDataModule
from adlight.data.batch_augmentation import BatchAugmentation, rotate_and_flip
from adlight.data.datasets import collate_batches
from adlight.errors import DataError


def _square_scene(n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose bright off-centre rectangle is also the mask (so the two can be compared)."""
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, 4:14, 6:24] = 1.0
    image = 0.1 + 0.8 * mask.repeat(1, 3, 1, 1)
    return image, mask


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_a_known_angle_rotates_as_torchvision_and_masks_move_with_nearest(shape):
    torch.manual_seed(0)
    h, w = shape
    image = torch.rand(3, 3, h, w)
    mask = (torch.rand(3, 1, h, w) > 0.7).float()
    angles = torch.tensor([17.0, -30.0, 90.0])
    none = torch.zeros(3, dtype=torch.bool)
    out, out_mask = rotate_and_flip(image, mask, angles, none, none)
    for k, angle in enumerate(angles.tolist()):
        ref, ref_mask = TF.rotate(tv_tensors.Image(image[k]), angle,
                                  interpolation=v2.InterpolationMode.BILINEAR, fill=0), \
            TF.rotate(tv_tensors.Mask(mask[k]), angle, fill=0)
        assert (out[k] - ref).abs().max() < 1e-4  # bilinear, corners 0 as torchvision's fill=0
        # nearest sampling: a pixel centre exactly on a boundary may round the other way
        assert (out_mask[k] != ref_mask).float().mean() < 0.01
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}


def test_flips_after_rotation_are_torchvision_order():
    image = torch.rand(2, 3, 20, 20)
    angles = torch.tensor([25.0, 25.0])
    out, _ = rotate_and_flip(image, None, angles, torch.tensor([True, False]),
                             torch.tensor([False, True]))
    rotated = TF.rotate(tv_tensors.Image(image), 25.0, interpolation=v2.InterpolationMode.BILINEAR,
                        fill=0)
    assert (out[0] - rotated[0].flip(-1)).abs().max() < 1e-4
    assert (out[1] - rotated[1].flip(-2)).abs().max() < 1e-4


def test_draws_are_uniform_angles_and_fair_flips():
    torch.manual_seed(1)
    angles, hflips, vflips = BatchAugmentation(rotation_degrees=10, hflip=True, vflip=True).draw(8000)
    assert angles.min() >= -10 and angles.max() <= 10
    assert abs(angles.mean()) < 0.2 and abs(angles.std() - 10 / 3**0.5) < 0.15  # U(-10, 10)
    assert abs(hflips.float().mean() - 0.5) < 0.03 and abs(vflips.float().mean() - 0.5) < 0.03
    assert abs((hflips & vflips).float().mean() - 0.25) < 0.03  # drawn independently
    angles, hflips, vflips = BatchAugmentation(noise_std=0.1).draw(5)
    assert not angles.any() and not hflips.any() and not vflips.any()


def test_each_image_gets_its_own_flip_and_masks_follow():
    torch.manual_seed(2)
    image, mask = _square_scene(64)
    out, out_mask = BatchAugmentation(hflip=True, vflip=True)(image, mask)
    kinds = []
    for k in range(64):
        options = {(hf, vf): image[k].flip(*[d for d, on in ((-1, hf), (-2, vf)) if on])
                   if hf or vf else image[k] for hf in (0, 1) for vf in (0, 1)}
        kind = [key for key, ref in options.items() if torch.equal(out[k], ref)]
        assert len(kind) == 1
        kinds.append(kind[0])
        assert torch.equal(out_mask[k], (out[k][:1] > 0.5).float())  # the mask moved along
    assert len(set(kinds)) == 4  # all four combinations occur among 64 images


def test_rotation_and_noise_keep_masks_binary_and_aligned_and_images_in_range():
    torch.manual_seed(3)
    image, mask = _square_scene(32)
    out, out_mask = BatchAugmentation(rotation_degrees=45, hflip=True, vflip=True,
                                      noise_std=0.05)(image, mask)
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    assert 0.0 <= out.min() and out.max() <= 1.0
    bright = out[:, :1] > 0.5
    inter = (bright & (out_mask > 0.5)).sum((1, 2, 3)).float()
    union = (bright | (out_mask > 0.5)).sum((1, 2, 3)).float()
    assert (inter / union).min() > 0.85
    assert (out_mask != mask).any(dim=(1, 2, 3)).float().mean() > 0.8  # they did move
    assert torch.equal(image, _square_scene(32)[0])  # the input is not written into


def test_noise_is_gaussian_on_the_image_only_and_clipped():
    torch.manual_seed(4)
    image = torch.full((8, 3, 32, 32), 0.5)
    mask = torch.zeros(8, 1, 32, 32)
    out, out_mask = BatchAugmentation(noise_std=0.1)(image, mask)
    assert abs((out - image).std() - 0.1) < 0.005 and abs((out - image).mean()) < 0.005
    assert torch.equal(out_mask, mask)
    out, _ = BatchAugmentation(noise_std=2.0)(image)
    assert out.min() == 0.0 and out.max() == 1.0


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    image, mask = _square_scene(16)
    augment = BatchAugmentation(rotation_degrees=10, hflip=True, vflip=True, noise_std=0.01)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(augment(image, mask))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_uint8_batches_are_scaled_first_and_bad_options_name_the_argument():
    image = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    out, _ = BatchAugmentation(hflip=True)(image)
    assert out.dtype == torch.float32 and torch.equal(out, torch.ones(2, 3, 8, 8))
    with pytest.raises(DataError, match="rotation_degrees"):
        BatchAugmentation(rotation_degrees=200)
    with pytest.raises(DataError, match="noise_std"):
        LoaderOptions(noise_std=-1)
    assert LoaderOptions().batch_augmentation() is None


def test_batches_read_from_the_uint8_cache_equal_collated_items(tmp_path):
    from synthetic import make_mvtec_tree

    root = make_mvtec_tree(tmp_path, n_train=6, n_good_test=3, defects={"scratch": 3}, size=40)
    dm = MVTecDataModule(root=str(root), image_size=24, val_fraction=0.0,
                         loader=LoaderOptions(batch_size=4, hflip=True))
    plain = MVTecDataModule(root=str(root), image_size=24, val_fraction=0.0,
                            loader=LoaderOptions(batch_size=4, cache_images=False))
    for split in ("train_dataset", "test_dataset"):
        ds, ref = getattr(dm, split), getattr(plain, split)
        indices = [3, 0, 2] if len(ds) > 3 else [0, 1]
        for _ in range(2):  # first read fills the cache, the second gathers from it
            items = ds.__getitems__(indices)
            batch = collate_batches(items)
            expected = default_collate([ref[i] for i in indices])
            assert batch.keys() == expected.keys()
            for key in batch:
                if isinstance(batch[key], torch.Tensor):
                    assert batch[key].dtype == expected[key].dtype
                    assert torch.equal(batch[key], expected[key]), key
                else:
                    assert batch[key] == expected[key]
            restacked = default_collate(items)  # another collate_fn sees plain items
            assert torch.equal(restacked["image"], expected["image"])
    assert dm.test_dataset._cache.images.dtype == torch.uint8
    assert dm.test_dataset._cache.images.shape == (len(dm.test_dataset), 3, 24, 24)


def test_views_over_other_samples_share_the_cache_by_sample(tmp_path):
    from synthetic import make_mvtec_tree

    root = make_mvtec_tree(tmp_path, n_train=6, n_good_test=3, defects={"scratch": 4}, size=40)
    kwargs = dict(root=str(root), image_size=16, abnormal_train_fraction=0.5, val_fraction=0.0)
    dm = MVTecDataModule(**kwargs)
    plain = MVTecDataModule(**kwargs, loader=LoaderOptions(cache_images=False))
    train = dm.train_dataset
    train.__getitems__(list(range(len(train))))[0]  # every training image cached, anomalies too
    view, ref = dm.train_eval_dataset(), plain.train_eval_dataset()
    assert view._cache is train._cache and len(view) < len(train)
    for i in range(len(view)):
        assert view[i]["path"] == ref[i]["path"]
        assert torch.equal(view[i]["image"], ref[i]["image"])


class _Recorder(L.LightningModule):
    """Records the images each training and validation step sees."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[dict]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append({k: batch[k] for k in ("image", "index")})
        return (self.weight - batch["image"].mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append({k: batch[k] for k in ("image", "index")})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(seed: int, run_dir) -> tuple[_Recorder, DigitsDataModule]:
    L.seed_everything(seed, verbose=False)
    dm = DigitsDataModule(image_size=8, loader=LoaderOptions(batch_size=16, noise_std=0.2,
                                                             hflip=True, rotation_degrees=20))
    model = _Recorder()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=1, accelerator="cpu",
                        default_root_dir=run_dir)  # split.csv goes there
    trainer.fit(model, datamodule=dm)
    return model, dm


def test_a_fit_augments_training_batches_only_and_repeats_under_a_seed(tmp_path):
    model, dm = _fit(0, tmp_path)
    assert len(model.seen["train"]) == 3 and len(model.seen["val"]) == 3  # sanity + 2
    for stage, dataset in (("train", dm.train_dataset), ("val", dm.val_dataset)):
        for batch in model.seen[stage]:
            clean = torch.stack([dataset[int(i)]["image"] for i in batch["index"]])
            same = torch.equal(batch["image"], clean)
            assert same == (stage == "val"), stage
    again, _ = _fit(0, tmp_path)
    other, _ = _fit(1, tmp_path)
    for a, b in zip(model.seen["train"], again.seen["train"], strict=True):
        assert torch.equal(a["image"], b["image"])
    assert not torch.equal(model.seen["train"][0]["image"], other.seen["train"][0]["image"])
