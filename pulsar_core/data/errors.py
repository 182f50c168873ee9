"""The one error type for whole-input data problems (as opposed to bad rows, which are rejected)."""

from __future__ import annotations


class DataContractError(ValueError):
    """The input as a whole breaks the data contract: the message names the field and the fix."""


class DataUnavailable(RuntimeError):
    """A remote data source (s3://, gs://, ...) did not answer: retrying later may help."""


class AccessDenied(DataUnavailable):
    """The source refused the credentials: retrying will not help until the Secret changes."""
