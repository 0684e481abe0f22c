"""Checkpoints: ``model.safetensors`` + ``config.json`` in one folder, each written atomically.

``config.json`` holds ``{"model": ModelConfig.to_dict(), ...metadata}``: enough to rebuild the model
with no code from the run that produced it. No pickle: weights are safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgereid.data.atomic import atomic_path, write_json_atomic
from edgereid.data.json_file import read_json_object
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .models.registry import build_model
from .models.reid_model import ReIDModel

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_checkpoint(model: ReIDModel, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    cfg = model.sync_config()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "edgereid-checkpoint-1"})
    write_json_atomic(out / CONFIG, {"format": "edgereid-checkpoint", "version": 1,
                                      "model": cfg.to_dict(), **(metadata or {})})
    return out


def read_config(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint folder (missing {CONFIG}; expected {CONFIG} + {WEIGHTS})")
    data = read_json_object(path, "a checkpoint config (JSON object with a 'model' field)")
    if "model" not in data:
        raise ValueError(f"{path}: missing the 'model' field")
    return data


def load_model(ckpt_dir: str | Path, map_location: str = "cpu") -> ReIDModel:
    """Rebuild the model of a checkpoint folder in eval mode."""
    data = read_config(ckpt_dir)
    cfg = ModelConfig.from_dict(data["model"])
    model = build_model(cfg)
    weights = Path(ckpt_dir) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{ckpt_dir}: missing {WEIGHTS}")
    state = load_file(str(weights), device=map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not match its config.json (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()
