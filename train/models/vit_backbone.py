"""The ReID ViT trunk: timm's patch embedding and MLP, our prunable attention.

State-dict keys are those of ``timm.models.vision_transformer.VisionTransformer`` (``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), so timm checkpoints load directly (see ``pretrained.py``; with ``stem="conv"`` every key
but the patch embedding's). Every block knows statically
how many tokens it receives, which is what keeps exported shapes static under token dropping.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from torch import nn

from ..config import BackboneConfig
from .attention import PrunableAttention
from .token_drop import drop_tokens, kept_count


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig, layer: int, drop_path: float, tokens_in: int) -> None:
        super().__init__()
        d = cfg.embed_dim
        kv = cfg.kv_keep[layer] if cfg.kv_keep is not None else None
        if kv is not None and max(kv) >= tokens_in:
            raise ValueError(f"kv_keep of block {layer} has position {max(kv)} but the block sees {tokens_in} tokens")
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = PrunableAttention(d, cfg.heads(layer), cfg.head_dim, kv_keep=kv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(in_features=d, hidden_features=int(d * cfg.mlp_ratio), act_layer=nn.GELU)
        self.tokens_in = tokens_in
        self.keep_k = kept_count(tokens_in - 1, cfg.drop_keep) if layer in cfg.drop_layers else None

    @property
    def tokens_out(self) -> int:
        if self.keep_k is None:
            return self.tokens_in
        n = self.tokens_in - 1
        return 1 + self.keep_k + (1 if self.keep_k < n else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, attn = self.attn(self.norm1(x), need_attn=self.keep_k is not None)
        x = x + self.drop_path(y)
        if self.keep_k is not None:
            x = drop_tokens(x, attn, self.keep_k)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvStem(nn.Module):
    """3x3 stride-2 conv + BN + ReLU stages (log2(patch_size) of them, channels doubling from
    ``width``), then a 1x1 projection to ``embed_dim``: the same token grid as a patch embedding."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = 3, cfg.stem_width
        for _ in range(cfg.patch_size.bit_length() - 1):
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in, c = c, c * 2
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, cfg.embed_dim, 1)
        self.num_patches = cfg.num_patches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stages(x)).flatten(2).transpose(1, 2)


def build_stem(cfg: BackboneConfig) -> nn.Module:
    if cfg.stem == "conv":
        return ConvStem(cfg)
    return PatchEmbed(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=3, embed_dim=cfg.embed_dim)


class ViTBackbone(nn.Module):
    """Patch embedding + cls token + blocks + final norm. ``forward`` returns all tokens (B, T, d)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = build_stem(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, d))
        rates = [x.item() for x in torch.linspace(0, cfg.drop_path_rate, cfg.depth)]
        blocks, tokens = [], 1 + cfg.num_patches
        for i in range(cfg.depth):
            block = Block(cfg, i, rates[i], tokens)
            tokens = block.tokens_out
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_weights)

    @property
    def tokens_per_layer(self) -> list[int]:
        """Tokens each block's queries/MLP process (what MAC counting needs)."""
        return [b.tokens_in for b in self.blocks]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def attention_layers(self) -> list[PrunableAttention]:
        return [b.attn for b in self.blocks]


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
