"""The small error hierarchy of cjkrag. Every message names the file/field at fault and the fix."""

from __future__ import annotations


class CjkragError(Exception):
    """Base class of every error cjkrag raises on purpose."""


class ConfigError(CjkragError):
    """A configuration file or value is wrong (the message names the key)."""


class FilterError(CjkragError, ValueError):
    """A filter (or a principal) is malformed: unknown operator, wrong value type, bad field name."""


class InputError(CjkragError):
    """A document cannot be read (missing path, binary file, undecodable text, unknown extension...)."""


class AccessError(CjkragError):
    """An access rule is missing or invalid (ingestion without any ACL, bad principal...)."""


class ModelError(CjkragError):
    """An embedding / reranking model cannot be found, converted or loaded."""


class StoreError(CjkragError):
    """The vector store rejected an operation."""


class StoreUnavailable(StoreError):
    """The vector store cannot be reached (server down, wrong URI, missing client library)."""


class MissingDependency(CjkragError, ImportError):
    """An optional extra is not installed; the message says which `pip install cjkrag[...]` fixes it."""


def missing(extra: str, package: str) -> MissingDependency:
    return MissingDependency(
        f"{package!r} is not installed: install the extra with `pip install 'cjkrag[{extra}]'`"
    )
