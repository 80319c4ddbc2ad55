"""reviewkit's version: defined here once (pyproject.toml reads it), importable from anywhere below."""

__version__ = "0.1.0"
