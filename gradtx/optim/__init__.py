"""gradtx.optim: the torch.optim-style facade (being written)."""
