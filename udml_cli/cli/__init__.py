"""Typer commands: translate flags into a config, call the core, render the result.

Nothing here imports torch or faiss at module level, so ``udml --help`` stays fast.
"""
