"""What ``edgereid prune`` does: ``PruneConfig`` (its fields are the command's flags)."""

from __future__ import annotations

from dataclasses import dataclass

from edgereid.data.flags import int_list, option

from .modes import MODES, STAGES, TOKEN_FORMS

__all__ = ["PruneConfig"]


@dataclass
class PruneConfig:
    """What to prune and how long to fine-tune (defaults: the seed's token recipe).

    mode: an entry of ``modes.MODES`` (heads | tokens-kv | tokens-drop | heads+tokens).
    rate: fraction pruned: of all heads (heads), of all layer x patch key positions (kv), of the
        patch tokens at each drop layer (drop). ``token_rate`` is the token stage's rate in
        ``heads+tokens`` (default: ``rate``), ``token_form`` its form (kv as in the seed, or drop).
    stats_batches: cap on the gathering pass's batches (None = the whole training split).
    final_step_epochs: epochs of the final stage at which the lr is multiplied by 0.1
        (None = once, at 70 % of the final stage).
    """

    mode: str = option("tokens-kv", "what to prune: " + "; ".join(f"{m.name} = {m.help}" for m in MODES.values()),
                       choices=lambda: list(MODES))
    rate: float = option(0.4, "fraction pruned: of all heads (heads), of all layer x patch key positions (tokens-kv), "
                              "of the patch tokens at each drop layer (tokens-drop)")
    token_rate: float | None = option(None, "heads+tokens: the token stage's rate (default: --rate)",
                                      show_default=False)
    token_form: str = option("kv", "heads+tokens: the token stage, " + "; ".join(
        f"{f} = {STAGES[f].help}" for f in TOKEN_FORMS), choices=lambda: list(TOKEN_FORMS))
    iterations: int = option(1, "prune + fine-tune rounds per stage")
    finetune_epochs: int = option(0, "fine-tuning epochs after each round")
    final_epochs: int = option(10, "fine-tuning epochs after the last round")
    drop_layers: list[int] | None = option(None, "0-based blocks that drop tokens (default: depth/4, depth/2, "
                                                 "3*depth/4 = 3,6,9 for 12 blocks)", type=int_list)
    lr: float = option(1e-4, "Adam learning rate of every fine-tuning stage")
    weight_decay: float = option(1e-3, "Adam weight decay")
    final_step_epochs: list[int] | None = option(None, "final-stage epochs where the lr drops x0.1 (default: at "
                                                       "70%% of the final stage)", type=int_list)
    stats_batches: int | None = option(None, "cap on the gathering pass's batches (default: the whole training split)")
    eval_rounds: bool = option(True, "skip evaluating the dense model and each round without fine-tuning (saves time)",
                               flag="--no-round-eval")

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"prune mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.token_form not in TOKEN_FORMS:
            raise ValueError(f"token form {self.token_form!r}: expected {' or '.join(TOKEN_FORMS)}")
        for name in ("rate", "token_rate"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.finetune_epochs < 0 or self.final_epochs < 0:
            raise ValueError("finetune_epochs and final_epochs must be >= 0")

    def stages(self) -> list[tuple[str, float]]:
        """(stage kind, rate) in order; kinds are the ``modes.STAGES`` (heads, kv, drop)."""
        return MODES[self.mode].stages(self)
