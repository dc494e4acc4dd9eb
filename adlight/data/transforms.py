"""Eval and train transforms (torchvision.transforms.v2).

A transform is called as ``transform(image)`` or ``transform(image, mask)`` with
``tv_tensors.Image`` (float32 in [0, 1]) and ``tv_tensors.Mask`` (float32 0/1). v2 dispatches on
those types, so geometric augmentations move image and mask identically, masks are resized and
rotated with nearest-neighbour interpolation (they stay 0/1) and noise touches only the image.

Augmentations are the ones Fadaeinejad uses for the convolutional autoencoder: random rotation,
horizontal and vertical flips and additive Gaussian noise; each is off unless its argument
turns it on.
"""

from __future__ import annotations

from typing import Any

from torchvision import tv_tensors
from torchvision.transforms import v2

from adlight.checks import check_image_size, image_shape
from adlight.errors import DataError


class ClampImage(v2.Transform):
    """Clamp images to [0, 1]; masks pass through.

    Antialiased bilinear resizing is a convex combination in exact arithmetic, but in float32 it
    returns values like 1.0000001 for white pixels; the batch contract promises [0, 1].
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask) or not inpt.is_floating_point():
            return inpt
        return (
            tv_tensors.wrap(inpt.clamp(0.0, 1.0), like=inpt)
            if isinstance(inpt, tv_tensors.TVTensor)
            else inpt.clamp(0.0, 1.0)
        )


def eval_transform(image_size: int | tuple[int, int]) -> v2.Compose:
    """Resize to ``image_size x image_size`` or to ``(height, width)`` (bilinear with
    antialias; masks nearest)."""
    image_size = check_image_size("image_size", image_size, 1, DataError)
    # bilinear, not bicubic: bicubic overshoots [0, 1] by far more than float rounding
    return v2.Compose(
        [
            v2.Resize(
                image_shape(image_size),
                interpolation=v2.InterpolationMode.BILINEAR,
                antialias=True,
            ),
            ClampImage(),
        ]
    )


def check_augmentation(rotation_degrees: float, noise_std: float) -> None:
    """:class:`DataError` naming the argument when an augmentation's value is out of range."""
    if (
        not isinstance(rotation_degrees, (int, float))
        or rotation_degrees < 0
        or rotation_degrees > 180
    ):
        raise DataError(f"rotation_degrees must be in [0, 180], got {rotation_degrees!r}")
    if not isinstance(noise_std, (int, float)) or noise_std < 0:
        raise DataError(f"noise_std must be >= 0, got {noise_std!r}")


def augmentation_transform(
    rotation_degrees: float = 0.0,
    hflip: bool = False,
    vflip: bool = False,
    noise_std: float = 0.0,
) -> v2.Compose | None:
    """The train-only augmentations that are switched on, in this order (``None`` if all off).

    The datamodules augment whole training batches instead
    (:class:`adlight.data.batch_augmentation.BatchAugmentation`, the same distribution); this
    per-image form is for a dataset used on its own. ``rotation_degrees > 0``: an angle
    uniform in ``[-d, d]``, uncovered corners 0; ``hflip``/``vflip``: probability 0.5;
    ``noise_std > 0``: Gaussian noise on the image only, clipped to [0, 1].
    """
    check_augmentation(rotation_degrees, noise_std)
    steps: list = []
    if rotation_degrees > 0:
        steps.append(
            v2.RandomRotation(
                degrees=float(rotation_degrees), interpolation=v2.InterpolationMode.BILINEAR, fill=0
            )
        )
    if hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if vflip:
        steps.append(v2.RandomVerticalFlip(p=0.5))
    if noise_std > 0:
        steps.append(v2.GaussianNoise(mean=0.0, sigma=float(noise_std), clip=True))
    return v2.Compose([*steps, ClampImage()]) if steps else None
