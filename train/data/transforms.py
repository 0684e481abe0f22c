"""Image transforms for training and evaluation (torchvision), driven by the model's input spec."""

from __future__ import annotations

import torch
from torchvision import transforms as T

from ..config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["AugmentConfig", "IMAGENET_MEAN", "IMAGENET_STD", "collate", "eval_transform", "train_transform"]


def train_transform(img_size: tuple[int, int], aug: AugmentConfig | None = None,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    aug = aug or AugmentConfig()
    steps: list = [T.Resize(img_size, interpolation=T.InterpolationMode.BILINEAR)]
    if aug.flip > 0:
        steps.append(T.RandomHorizontalFlip(aug.flip))
    if aug.pad > 0:
        steps += [T.Pad(aug.pad), T.RandomCrop(img_size)]
    if aug.color_jitter > 0:
        c = aug.color_jitter
        steps.append(T.ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(c / 4, 0.5)))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if aug.random_erasing > 0:
        steps.append(T.RandomErasing(p=aug.random_erasing, value=0))
    return T.Compose(steps)


def eval_transform(img_size: tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    """Must match the runtime's preprocessing: bilinear resize to (H, W), RGB, /255, (x-mean)/std."""
    return T.Compose([T.Resize(img_size, interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(), T.Normalize(mean, std)])


def collate(batch):
    images, pids, camids = zip(*batch)
    return torch.stack(images), torch.tensor(pids), torch.tensor(camids)
