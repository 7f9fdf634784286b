"""lightning_maia: MAIA interpretability agents inside PyTorch Lightning."""
