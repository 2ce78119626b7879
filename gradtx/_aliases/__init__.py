"""Optimizers as chains of transforms, under optax's names; ``gradtx/__init__.py`` re-exports each module's ``__all__``."""
