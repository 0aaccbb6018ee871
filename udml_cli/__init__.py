"""udml: unsupervised deep metric learning (UDML-SS) from the command line and from Python.

The Python API (``udml_cli.api``), imported lazily so ``udml --help`` stays fast:
``settings``, ``train``, ``run_summary``, ``evaluate``, ``evaluate_run``, ``label_free``,
``cluster``,
``load_model``, ``embed_folder``, ``embed_files``, ``build_index``, ``Index``,
``duplicate_groups``, ``find_duplicates``.
"""

__version__ = "0.1.0"

_API = {
    "settings": "udml_cli.api", "train": "udml_cli.api", "load_model": "udml_cli.api",
    "embed_folder": "udml_cli.api", "embed_files": "udml_cli.api", "build_index": "udml_cli.api",
    "run_summary": "udml_cli.api", "evaluate": "udml_cli.api", "evaluate_run": "udml_cli.api",
    "cluster": "udml_cli.api", "label_free": "udml_cli.api",
    "Index": "udml_cli.index", "duplicate_groups": "udml_cli.index",
    "find_duplicates": "udml_cli.review",
}  # fmt: skip
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'udml_cli' has no attribute {name!r}")
