"""The package version, in one place: pyproject.toml reads it (setuptools' dynamic version),
the package root re-exports it and adapter files record it."""

__version__ = "0.1.0"
