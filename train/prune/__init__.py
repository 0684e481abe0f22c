"""Attention-map-guided ViT pruning (seed 003).

Modules, one job each: ``statistics`` (the gathering pass), ``head_entropy`` (which heads go and
their physical removal), ``token_kv`` (image-independent key/value position pruning),
``token_drop_plan`` (configuring top-k token dropping), ``schedule`` (rounds of gather / prune /
distilled fine-tuning), ``cost`` (params, MACs as run, measured latency), ``cli``.
"""
