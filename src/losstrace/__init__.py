"""losstrace: train recurrent classifiers reproducibly and explain their loss curves."""

__version__ = "0.1.0"
