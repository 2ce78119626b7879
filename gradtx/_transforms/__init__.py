"""The composable pieces, one module per family; ``gradtx/__init__.py`` re-exports each module's ``__all__``."""
