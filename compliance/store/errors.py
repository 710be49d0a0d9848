"""Store exceptions, and the one place SQLAlchemy errors are translated into them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError


class StoreUnavailable(Exception):
    """The database cannot be reached or used (connection refused, locked, schema missing)."""


class StoreError(Exception):
    """The database refused a write or read for a reason other than availability."""


class NotFoundError(StoreError):
    """The row a write refers to does not exist; nothing was written."""


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy errors as StoreError (integrity, data) or StoreUnavailable (rest)."""
    try:
        yield
    except (IntegrityError, DataError) as exc:
        raise StoreError(_describe(exc)) from exc
    except DBAPIError as exc:
        raise StoreUnavailable(_describe(exc)) from exc
    except SQLAlchemyError as exc:
        raise StoreError(_describe(exc)) from exc


def _describe(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
