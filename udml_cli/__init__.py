"""udml: unsupervised deep metric learning (UDML-SS) from the command line."""

__version__ = "0.1.0"
