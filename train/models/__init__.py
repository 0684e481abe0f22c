"""ReID ViT models: prunable backbone, compressed embedding heads, BNNeck, timm registration."""

from .registry import build_model
from .reid_model import ReIDModel

__all__ = ["ReIDModel", "build_model"]
