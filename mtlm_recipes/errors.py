"""User mistakes (a bad config key or value, a missing file) as one line with the fix, not a traceback.

Recipes raise `ConfigError` or `InputFileError` where what a user typed cannot work; the scripts' `main` is
wrapped in `report_user_errors`, which prints such an error as one line on stderr and exits with status 2 (as
argparse does for a bad flag). Every other exception is a bug and keeps its traceback.
"""

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

USAGE_ERROR_STATUS = 2  # argparse's status for a bad command line


class ConfigError(ValueError):
    """A config key or value, or a command-line value, that cannot work; the message names it and the fix."""


class InputFileError(FileNotFoundError):
    """A file or folder the user named is missing or is not what it must be; the message says what to give."""


@contextmanager
def user_input(where: str) -> Iterator[None]:
    """Treat a `ValueError` / `FileNotFoundError` raised inside as the user's mistake in `where`.

    For library calls fed straight from what the user typed (`MTLMConfig.from_preset(**overrides)`,
    `GrowthSpec.from_dict(...)`): their messages already name the problem, and this adds where it was typed.
    """
    try:
        yield
    except (ConfigError, InputFileError):
        raise
    except FileNotFoundError as error:
        raise InputFileError(f"{where}: {error}") from error
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error


def report_user_errors(main: Callable[[], None]) -> Callable[[], None]:
    """Wrap a script's `main`: a `ConfigError` or `InputFileError` becomes `error: ...` on stderr and exit 2."""

    @functools.wraps(main)
    def run() -> None:
        try:
            main()
        except (ConfigError, InputFileError) as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(USAGE_ERROR_STATUS) from None

    return run
