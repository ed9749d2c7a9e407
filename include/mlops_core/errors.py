"""Errors a retry cannot fix.

A task that fails on bad input, a refused path, a missing version or a missing approval gets the
same answer on every retry; retrying only delays the user's answer (three retries with backoff
took 100 s). Exceptions that derive from :class:`PermanentError` make the Airflow layer fail the
task at once (``AirflowFailException``); everything else (a server not answering, a lock) is
retried.
"""

from __future__ import annotations


class PermanentError(Exception):
    """The same inputs will fail the same way: fail now, do not retry."""


class ApprovalRequired(PermanentError):
    """An environment whose ``promotion.require_approval`` is true got no approval for a change."""
