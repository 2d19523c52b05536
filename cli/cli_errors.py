"""How every command exits on a user's mistake: one line on stderr, no traceback.

Invalid settings exit 2 (pydantic's message names the variable and the problem); a
RecstreamError (no such device, backend, dataset, broker, ...) exits 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from recstream.config.settings import Settings

err = Console(stderr=True)


def settings_or_exit(**overrides: Any) -> Settings:
    """The settings with the ``overrides`` that are not None, or exit 2 saying what is wrong."""
    from recstream.config.settings import load_settings

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return load_settings(**clean)
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def fail(exc: Exception) -> typer.Exit:
    """Print ``exc`` as one error line; the exit (code 1) for the caller to raise."""
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """A RecstreamError raised inside becomes one error line and exit 1."""
    from recstream.models.errors import RecstreamError

    try:
        yield
    except RecstreamError as exc:
        raise fail(exc) from exc
