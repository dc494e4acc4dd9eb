"""Image/mask loading, transforms, datasets and split helpers of adlight.data."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import defect_image, normal_image
from torchvision import tv_tensors

from adlight.data import (
    ImageFileDataset,
    Sample,
    TensorImageDataset,
    augmentation_transform,
    eval_transform,
    list_images,
    load_image,
    load_mask,
    stratified_split,
)
from adlight.errors import DataError


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


# ----------------------------------------------------------------------------- images


def test_load_image_rgb_values_and_dtype(tmp_path):
    arr = normal_image(16, np.random.default_rng(0))
    p = _png(tmp_path / "a.png", arr)
    x = load_image(p, 3)
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16)
    assert torch.allclose(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_grayscale_file_in_rgb_set_is_repeated_and_rgb_in_gray_set_is_luminance(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    p = _png(tmp_path / "g.png", gray)
    x = load_image(p, 3)
    assert x.shape == (3, 8, 8)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0], torch.from_numpy(gray).float() / 255)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red: luminance 0.299
    y = load_image(_png(tmp_path / "r.png", rgb), 1)
    assert y.shape == (1, 8, 8)
    assert abs(y.mean().item() - 0.299) < 0.01


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    p = tmp_path / "w.png"
    Image.fromarray(arr).save(p)
    x = load_image(p, 1)
    assert x.max().item() == pytest.approx(1.0) and x.min().item() == 0.0


@pytest.mark.parametrize(
    "content",
    [b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20],
    ids=["text", "truncated"],
)
def test_undecodable_image_raises_data_error_naming_the_path(tmp_path, content):
    p = tmp_path / "broken.png"
    p.write_bytes(content)
    with pytest.raises(DataError, match=f"cannot decode image {re.escape(str(p))}"):
        load_image(p)


def test_truncated_real_png_raises_data_error(tmp_path):
    p = _png(tmp_path / "t.png", normal_image(64, np.random.default_rng(0)))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match=re.escape(str(p))):
        load_image(p)


def test_missing_image_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_load_mask_binarises_0_255_and_0_1_masks(tmp_path):
    m255 = np.zeros((6, 6), dtype=np.uint8)
    m255[1:3, 1:3] = 255
    m255[5, 5] = 40  # any non-zero value is a defect (docs/contracts.md), also a faint one
    m = load_mask(_png(tmp_path / "m255.png", m255))
    assert m.shape == (1, 6, 6) and m.dtype == torch.float32
    assert set(m.unique().tolist()) == {0.0, 1.0} and m.sum().item() == 5
    m01 = (m255 != 0).astype(np.uint8)  # stored as 0/1
    assert torch.equal(load_mask(_png(tmp_path / "m01.png", m01)), m)


def test_mask_of_other_size_raises_data_error_naming_both(tmp_path):
    mp = _png(tmp_path / "m.png", np.zeros((5, 7), dtype=np.uint8))
    with pytest.raises(DataError) as e:
        load_mask(mp, image_size=(8, 8), image_path=tmp_path / "img.png")
    msg = str(e.value)
    assert str(mp) in msg and "img.png" in msg and "7x5" in msg and "8x8" in msg


def test_list_images_is_sorted_case_insensitive_and_skips_other_files(tmp_path):
    arr = normal_image(8, np.random.default_rng(0))
    for name in ["b.PNG", "a.jpeg", "sub/c.TIF", "d.bmp"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(arr).save(tmp_path / ".hidden" / "e.png")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.jpeg", "b.PNG", "d.bmp", "sub/c.TIF"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.jpeg", "b.PNG", "d.bmp"]


# ----------------------------------------------------------------------------- transforms


def _pattern(size=32):
    """Asymmetric 0/1 pattern: an L-shape off-centre, used both as image and mask."""
    m = torch.zeros(1, size, size)
    m[0, 4:20, 6:10] = 1
    m[0, 16:20, 6:24] = 1
    return m


def test_eval_transform_resizes_image_bilinear_and_mask_nearest():
    m = torch.zeros(1, 20, 30)
    m[0, 3:9, 5:21] = 1
    img, mask = tv_tensors.Image(torch.rand(3, 20, 30)), tv_tensors.Mask(m)
    out_i, out_m = eval_transform(16)(img, mask)
    assert out_i.shape == (3, 16, 16) and out_m.shape == (1, 16, 16)
    assert set(out_m.unique().tolist()) <= {0.0, 1.0}
    assert 0.0 <= out_i.min() and out_i.max() <= 1.0


@pytest.mark.parametrize(
    "make", [eval_transform, lambda s: augmentation_transform(rotation_degrees=30)]
)
def test_resized_white_images_stay_within_0_1(make):
    """float32 antialiased resizing overshoots 1.0 by rounding; the contract says [0, 1]."""
    img = torch.ones(3, 900, 900)
    img[:, :300, :300] = 0.0  # unclamped, white pixels come out as 1 + 2.4e-7
    out = make(64)(eval_transform(64)(tv_tensors.Image(img)))  # datasets resize, then augment
    assert out.max() == 1.0 and out.min() == 0.0


def test_train_flips_and_rotation_move_image_and_mask_together():
    m = _pattern()
    t = augmentation_transform(rotation_degrees=45, hflip=True, vflip=True)
    torch.manual_seed(0)
    changed = 0
    for _ in range(12):
        out_i, out_m = t(tv_tensors.Image(m.repeat(3, 1, 1)), tv_tensors.Mask(m.clone()))
        assert set(out_m.unique().tolist()) <= {0.0, 1.0}
        on = out_m[0] > 0.5
        img_on = out_i[0] > 0.5
        iou = (on & img_on).sum() / (on | img_on).sum()
        assert iou > 0.8, f"image and mask disagree after augmentation (IoU {iou:.2f})"
        changed += int(not torch.equal(out_m, m))
    assert changed >= 10  # the augmentations did act


def test_flip_only_is_exact():
    m = _pattern()
    t = augmentation_transform(hflip=True, vflip=True)
    torch.manual_seed(1)
    seen = set()
    for _ in range(16):
        out_i, out_m = t(tv_tensors.Image(m.clone()), tv_tensors.Mask(m.clone()))
        assert torch.equal(out_i.as_subclass(torch.Tensor), out_m.as_subclass(torch.Tensor))
        seen.add(tuple(out_m.flatten().nonzero().flatten()[:3].tolist()))
    assert len(seen) >= 3  # several flip combinations occurred


def test_noise_changes_only_the_image_and_stays_in_range():
    img = torch.full((3, 16, 16), 0.98)
    m = _pattern(16)
    out_i, out_m = augmentation_transform(noise_std=0.2)(tv_tensors.Image(img),
                                                         tv_tensors.Mask(m))
    assert torch.equal(out_m.as_subclass(torch.Tensor), m)
    assert out_i.min() >= 0.0 and out_i.max() <= 1.0
    assert (out_i - img).abs().mean() > 0.05
    assert augmentation_transform() is None  # all off: the dataset's images pass unchanged


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: eval_transform(0), "image_size"),
        (lambda: augmentation_transform(rotation_degrees=-5), "rotation_degrees"),
        (lambda: augmentation_transform(noise_std=-0.1), "noise_std"),
    ],
)
def test_bad_transform_arguments_raise_data_error(make, word):
    with pytest.raises(DataError, match=word):
        make()


# ----------------------------------------------------------------------------- datasets


def test_image_file_dataset_items_follow_the_contract(tmp_path):
    rng = np.random.default_rng(0)
    normal = _png(tmp_path / "n.png", normal_image(32, rng))
    img, mask = defect_image(32, rng, "bright")
    bad = _png(tmp_path / "b.png", img)
    bad_mask = _png(tmp_path / "b_mask.png", mask)
    samples = [Sample(str(normal), 0, 0), Sample(str(bad), 1, 2, str(bad_mask))]
    ds = ImageFileDataset(samples, eval_transform(16), channels=3, has_masks=True)
    a, b = ds[0], ds[1]
    assert set(a) == {"image", "label", "mask", "path", "index", "class_id"}
    assert type(a["image"]) is torch.Tensor and a["image"].shape == (3, 16, 16)
    assert a["mask"].shape == (1, 16, 16) and a["mask"].sum() == 0
    assert (a["label"], a["index"], a["class_id"], a["path"]) == (0, 0, 0, str(normal))
    assert (b["label"], b["index"], b["class_id"]) == (1, 1, 2)
    assert b["mask"].sum() > 0
    # the mask sits on the bright square
    on = b["mask"][0] > 0
    assert b["image"][:, on].mean() > 0.85 and b["image"][:, ~on].mean() < 0.65
    no_masks = ImageFileDataset(samples[:1], None, channels=1)
    assert "mask" not in no_masks[0] and no_masks[0]["image"].shape == (1, 32, 32)


def test_anomalous_sample_without_mask_in_masked_dataset_raises(tmp_path):
    p = _png(tmp_path / "x.png", normal_image(8, np.random.default_rng(0)))
    ds = ImageFileDataset([Sample(str(p), 1, 1)], None, has_masks=True)
    with pytest.raises(DataError, match=re.escape(str(p))):
        ds[0]


def test_tensor_image_dataset_items_and_checks():
    imgs = torch.rand(5, 1, 8, 8)
    ds = TensorImageDataset(
        imgs, [0, 0, 1, 1, 0], [3, 3, 7, 8, 3], source="digits", ids=[10, 11, 12, 13, 14]
    )
    item = ds[2]
    assert (
        item["path"] == "digits:12"
        and item["index"] == 2
        and item["label"] == 1
        and item["class_id"] == 7
    )
    assert torch.equal(item["image"], imgs[2]) and "mask" not in item
    assert ds.rows()[0] == ("digits:10", 0, 3)
    with pytest.raises(DataError, match="labels has 2 entries"):
        TensorImageDataset(imgs, [0, 1], [0] * 5)
    with pytest.raises(DataError, match="N x C x H x W"):
        TensorImageDataset(torch.rand(5, 8, 8), [0] * 5, [0] * 5)


# ----------------------------------------------------------------------------- splits


def test_stratified_split_is_disjoint_seeded_and_keeps_every_stratum():
    strata = ["good"] * 20 + ["crack"] * 5 + ["hole"] * 2 + ["rare"] * 1
    a, b = stratified_split(strata, [0.25, 0.75], seed=3)
    assert not set(a) & set(b) and sorted(a + b) == list(range(len(strata)))
    for key in ("good", "crack", "hole"):
        assert any(strata[i] == key for i in a) and any(strata[i] == key for i in b)
    assert sum(strata[i] == "good" for i in a) == 5
    assert [x for x in (a, b)] == stratified_split(strata, [0.25, 0.75], seed=3)
    assert stratified_split(strata, [0.25, 0.75], seed=4) != [a, b]
    three = stratified_split(list(range(10)) * 10, [0.6, 0.2, 0.1], seed=0)
    assert [len(p) for p in three] == [60, 20, 10]  # the rest is left out
    with pytest.raises(DataError, match="sum to at most 1"):
        stratified_split(strata, [0.7, 0.7], seed=0)


def test_one_seeding_rule_takes_negative_seeds_and_keeps_int_seeds_as_numpy_has_them():
    from adlight.data.splits import seeded_rng

    assert seeded_rng(5).random() == np.random.default_rng(5).random()  # recorded splits hold
    assert seeded_rng(-2).random() != seeded_rng(2).random()
    a, b = stratified_split([0, 0, 1, 1, 1, 2], [0.5, 0.5], seed=-2)
    assert sorted(a + b) == list(range(6))


def test_an_image_over_pils_pixel_limit_is_a_data_error_naming_it(tmp_path, monkeypatch):
    p = _png(tmp_path / "huge.png", normal_image(16, np.random.default_rng(0)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 256 pixels: over twice the limit
    with pytest.raises(DataError, match=re.escape(str(p)) + ".*DecompressionBombError"):
        load_image(p)
