"""Multi-head self-attention whose heads and key/value tokens can be pruned physically.

Parameter names match timm's ``Attention`` (``qkv``, ``proj``) so timm ViT weights load as they
are. A block with ``h`` heads has a qkv projection of ``3 * h * head_dim`` rows and a proj of
``h * head_dim`` columns: pruning a head deletes its weights, it does not mask them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PrunableAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int, kv_keep: list[int] | None = None) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"an attention layer needs at least one head, got {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=True)
        self.proj = nn.Linear(inner, dim, bias=True)
        # kv token pruning: a constant gather of the kept key/value positions (0 = cls, always kept).
        if kv_keep is not None:
            if 0 not in kv_keep:
                raise ValueError("kv_keep must keep position 0 (the cls token)")
            self.register_buffer("kv_index", torch.tensor(sorted(kv_keep), dtype=torch.long), persistent=False)
        else:
            self.kv_index = None
        # Set by the pruning statistics passes: keep the attention map (and its gradient).
        self.capture = False
        self.last_attn: torch.Tensor | None = None
        # Optional per-head output gate, used only by tests/analysis (None = plain attention).
        self.head_gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, need_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (output, attention map or None). The map is (B, heads, T_q, T_kv)."""
        b, t, _ = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.kv_index is not None:
            k = k.index_select(2, self.kv_index)
            v = v.index_select(2, self.kv_index)
        attn = None
        if need_attn or self.capture:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            if self.capture:
                if attn.requires_grad:
                    attn.retain_grad()
                self.last_attn = attn
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        if self.head_gate is not None:
            out = out * self.head_gate.view(1, -1, 1, 1)
        out = out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self.proj(out), attn

    @torch.no_grad()
    def keep_heads(self, heads: list[int]) -> None:
        """Physically keep only ``heads`` (indices into the current heads), deleting the others."""
        heads = sorted(set(heads))
        if not heads:
            raise ValueError("cannot remove every head of a layer")
        if heads[-1] >= self.num_heads or heads[0] < 0:
            raise ValueError(f"head indices {heads} out of range for {self.num_heads} heads")
        hd, inner = self.head_dim, self.num_heads * self.head_dim
        cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads])
        rows = torch.cat([cols, cols + inner, cols + 2 * inner])
        new_qkv = nn.Linear(self.dim, 3 * len(heads) * hd, bias=True).to(self.qkv.weight)
        new_qkv.weight.copy_(self.qkv.weight[rows])
        new_qkv.bias.copy_(self.qkv.bias[rows])
        new_proj = nn.Linear(len(heads) * hd, self.dim, bias=True).to(self.proj.weight)
        new_proj.weight.copy_(self.proj.weight[:, cols])
        new_proj.bias.copy_(self.proj.bias)
        self.qkv, self.proj, self.num_heads = new_qkv, new_proj, len(heads)
        self.head_gate = None
