"""Side-by-side benchmarks of gradtx against optax and torch.optim."""
