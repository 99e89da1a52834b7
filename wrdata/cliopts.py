"""Options every ``wrdata`` command that reads or writes a recording shares.

``--root`` may be a URI (``s3://bucket/prefix``); ``--s3-endpoint`` names an
S3-compatible store for it (default ``$AWS_ENDPOINT_URL_S3``, then ``$AWS_ENDPOINT_URL``,
else AWS). Credentials are never options: they come from the AWS environment variables
and config files (:mod:`wrdata.storage.remote`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import pyarrow.fs as pafs

S3_ENDPOINT_HELP = (
    "S3-compatible endpoint for an s3:// --root, e.g. http://127.0.0.1:9000 (default $AWS_ENDPOINT_URL_S3, "
    "$AWS_ENDPOINT_URL, else AWS). Credentials come from the AWS environment variables and config files."
)


def s3_endpoint_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--s3-endpoint", "s3_endpoint", default=None, metavar="URL", help=S3_ENDPOINT_HELP)(f)


def open_root(root: str, s3_endpoint: str | None) -> pafs.FileSystem | None:
    """The filesystem to pass as ``filesystem=`` with ``root`` (``None`` for a local
    path). A store that cannot be used (no such bucket, wrong credentials, no answer)
    is a one-line usage error, exit status 2."""
    from .storage.remote import is_uri, open_filesystem

    if not is_uri(root):
        if s3_endpoint:
            raise click.UsageError(f"--s3-endpoint needs an s3:// --root, not {root!r}")
        return None
    try:
        fs, _ = open_filesystem(root, s3_endpoint=s3_endpoint)
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    return fs
