"""Pruning modes and the stages they run, one table entry each (``edgereid prune --mode``, ``--token-form``).

A *stage* is one kind of pruning step: ``heads`` (whole attention heads, lowest attention
entropy first), ``kv`` (key/value token positions by a Taylor score of attention x gradient),
``drop`` (tokens dropped by cls attention and fused into one). Each says how much every round of
``iterations`` removes (``plan``), whether it needs the gathering pass over the training split
(``statistics``) and how it removes that amount from a model (``apply``). A *mode* is the list of
stages ``edgereid prune --mode`` runs, each at a rate.

Adding a stage or a mode is one entry here and its code; ``schedule.run_pruning``, the CLI
choices and the tests read the tables. The torch side is imported inside the functions, so the
CLI reads the tables without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schedule import PruneConfig

__all__ = ["MODES", "STAGES", "TOKEN_FORMS", "PruneMode", "PruneStage"]


@dataclass(frozen=True)
class PruneStage:
    name: str
    help: str
    statistics: bool  # needs the gathering pass (attention maps, Taylor scores) before each round
    plan: Callable[[Any, float, int], list]  # (backbone config, rate, iterations) -> amount per round
    apply: Callable[[Any, Any, Any, PruneConfig], tuple[Any, dict[str, Any]]]  # (model, amount, stats, cfg)
    describe: Callable[[Any], str]  # amount -> "3 heads"
    shows: tuple[str, str] | None = None  # (label, structure field) its round log line adds


def _plan_heads(bb, rate: float, iterations: int) -> list:
    from .head_entropy import split_over_rounds, total_heads_to_prune

    return split_over_rounds(total_heads_to_prune(bb.depth, bb.num_heads, rate), iterations)


def _apply_heads(model, amount, stats, cfg: PruneConfig) -> tuple[Any, dict[str, Any]]:
    from .head_entropy import prune_heads_by_entropy

    return model, {**prune_heads_by_entropy(model, stats.mean_attn, amount), "pruned": amount}


def _plan_kv(bb, rate: float, iterations: int) -> list:
    from .head_entropy import split_over_rounds
    from .token_kv import total_positions_to_prune

    return split_over_rounds(total_positions_to_prune(bb.num_patches, bb.depth, rate), iterations)


def _apply_kv(model, amount, stats, cfg: PruneConfig) -> tuple[Any, dict[str, Any]]:
    from .token_kv import prune_kv_by_taylor

    return model, {**prune_kv_by_taylor(model, stats.taylor, amount), "pruned": amount}


def _plan_drop(bb, rate: float, iterations: int) -> list:
    from .token_drop_plan import keep_for_rate

    keep_for_rate(rate)  # a rate that keeps no token fails here, before any work
    return [round(rate * (r + 1) / iterations, 6) for r in range(iterations)]


def _apply_drop(model, amount, stats, cfg: PruneConfig) -> tuple[Any, dict[str, Any]]:
    from .token_drop_plan import apply_drop_plan, default_drop_layers, keep_for_rate

    layers = cfg.drop_layers if cfg.drop_layers is not None else default_drop_layers(model.cfg.backbone.depth)
    return apply_drop_plan(model, layers, keep_for_rate(amount)), {"pruned_rate": amount}


STAGES: dict[str, PruneStage] = {s.name: s for s in (
    PruneStage("heads", "attention heads by entropy", True, _plan_heads, _apply_heads, lambda n: f"{n} heads"),
    PruneStage("kv", "key/value token positions by Taylor score (the seed's token pruning)", True, _plan_kv,
               _apply_kv, lambda n: f"{n} kv", shows=("keys", "keys_per_layer")),
    PruneStage("drop", "tokens dropped by cls attention and fused into one (shortens the sequence)", False,
               _plan_drop, _apply_drop, lambda rate: f"drop rate {rate}", shows=("tokens", "tokens_out_per_layer")),
)}
TOKEN_FORMS = tuple(name for name in STAGES if name != "heads")  # the token stage of heads+tokens


@dataclass(frozen=True)
class PruneMode:
    name: str
    help: str
    stages: Callable[[PruneConfig], list[tuple[str, float]]]  # config -> (stage, rate) in order


MODES: dict[str, PruneMode] = {m.name: m for m in (
    PruneMode("heads", "attention heads by entropy", lambda c: [("heads", c.rate)]),
    PruneMode("tokens-kv", "kv token positions by Taylor score", lambda c: [("kv", c.rate)]),
    PruneMode("tokens-drop", "dropped tokens (top-k by cls attention)", lambda c: [("drop", c.rate)]),
    PruneMode("heads+tokens", "heads, then tokens in --token-form at --token-rate",
              lambda c: [("heads", c.rate), (c.token_form, c.rate if c.token_rate is None else c.token_rate)]),
)}
