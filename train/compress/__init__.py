"""Embedding compression (the paper arXiv 2405.14730).

- ``sizes``: the compressed sizes (ratios of d) and bytes-per-embedding accounting.
- ``convert``: model surgery (slice / low-rank heads from a dense model, other quantisation settings).
- ``dim_prune``: iterative dimension pruning (score by L2 norm over the train set, remove, retrain).
- ``ptq`` / ``qat``: post-training calibration of the embedding scale; QAT fine-tunes.
- ``evaluate_codes``: evaluation through the runtime codec (integer distances, 1-bit + re-ranking).
- ``methods``: train one compressed model (``edgereid compress``).
- ``sweep`` / ``report``: the methods x sizes x precision sweep (``edgereid sweep``).

Submodules import torch; import them directly (this package imports nothing eagerly).
"""
