"""What an AWS error says, read from a botocore ``ClientError`` without importing botocore.

One reading for every AWS module here (S3, Glue, SageMaker): the error code and message, and
whether the error means "that resource does not exist", which each service words its own way
(S3: ``404``/``NoSuchKey``; Glue: ``EntityNotFoundException``; SageMaker: a ``ValidationException``
whose message says it could not find the resource).
"""

from __future__ import annotations

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "EntityNotFoundException"})
_MISSING_WORDS = ("could not find", "not found", "does not exist")


def aws_error(exc: Exception) -> tuple[str, str]:
    """``(code, message)`` of a botocore ``ClientError``; empty strings for anything else."""
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


def is_missing(exc: Exception) -> bool:
    """True when the error says the named resource does not exist."""
    code, message = aws_error(exc)
    if code in _MISSING_CODES:
        return True
    return code in ("ValidationException", "ResourceNotFound") and any(w in message.lower() for w in _MISSING_WORDS)


def already_exists(exc: Exception) -> bool:
    """True when the error says a resource of that name exists already."""
    code, message = aws_error(exc)
    return code in ("AlreadyExistsException", "ResourceInUse") or (
        code == "ValidationException" and "already exist" in message
    )


def is_precondition_failed(exc: Exception) -> bool:
    """True when a conditional request (``IfMatch``, ``CopySourceIfMatch``) found another object (HTTP 412)."""
    code, _ = aws_error(exc)
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "412") or status == 412
