"""A torch Dataset over ``(image_path, pid, camid)`` records."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    def __init__(self, records: Sequence[tuple[str, int, int]], transform: Callable) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        path, pid, camid = self.records[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError as exc:
            raise OSError(f"cannot read image {path}: {exc}") from None
        return self.transform(img), pid, camid
