"""How every `ftrl` command reports a user's mistake: one `error:` line on stderr, exit status 2.

Kept apart from `flows.cli` so that sub-apps in their own modules (`flows.envs_cli`) can use it
without importing the main app, which mounts them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from policies.backends import BackendError
from tasks.profile import ProfileError

F = TypeVar("F", bound=Callable[..., Any])

#: Errors that mean "the user asked for something that cannot be done", reported without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ProfileError,
    BackendError,
    FileNotFoundError,
    FileExistsError,
    ValueError,
)


def reports_user_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]
