"""Feature extraction and ReID evaluation of a torch model (standard Market-1501 protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from edgereid.runtime.metrics import evaluate_all, squared_l2_distmat
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data.image_dataset import ImageDataset
from .data.transforms import collate, eval_transform


@torch.no_grad()
def extract_features(model: torch.nn.Module, records: Sequence[tuple[str, int, int]], img_size: tuple[int, int],
                     batch_size: int = 128, device: str | torch.device = "cpu", workers: int = 0,
                     desc: str = "features", raw: bool = False) -> np.ndarray:
    """Eval-mode embeddings of ``records`` as float32 (N, dim); ``raw`` gives the pre-norm embedding."""
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    loader = DataLoader(ImageDataset(records, eval_transform(img_size)), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate)
    feats = []
    for images, _, _ in tqdm(loader, desc=desc, leave=False, disable=len(loader) < 4):
        images = images.to(device)
        out = model.raw_embedding(images) if raw else model(images)
        feats.append(out.float().cpu().numpy())
    model.train(was_training)
    dim = feats[0].shape[1] if feats else 0
    return np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, dim), np.float32)


def evaluate_features(qf: np.ndarray, gf: np.ndarray, query, gallery) -> dict[str, float]:
    q_pids, q_cams = np.array([r[1] for r in query]), np.array([r[2] for r in query])
    g_pids, g_cams = np.array([r[1] for r in gallery]), np.array([r[2] for r in gallery])
    return evaluate_all(squared_l2_distmat(qf, gf), q_pids, g_pids, q_cams, g_cams)


def evaluate_model(model: torch.nn.Module, dataset, img_size: tuple[int, int], batch_size: int = 128,
                   device: str | torch.device = "cpu", workers: int = 0) -> dict[str, float]:
    qf = extract_features(model, dataset.query, img_size, batch_size, device, workers, desc="query")
    gf = extract_features(model, dataset.gallery, img_size, batch_size, device, workers, desc="gallery")
    return evaluate_features(qf, gf, dataset.query, dataset.gallery)
