"""Adaptive inference: early exits, compression variants, model selection, Edgent."""
