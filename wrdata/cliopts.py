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


# -- checks every command applies to its arguments ------------------------------------------
# Each raises click.UsageError: one line on stderr naming what is wrong, exit status 2,
# before the command reads or writes anything.


def check_providers(names: list[str] | None, opt: str = "--provider") -> list[str] | None:
    """Provider names, lower-cased; an unknown one is an error (not an empty result)."""
    from .streaming.registry import PROVIDERS

    if not names:
        return names
    out = []
    for n in names:
        p = n.strip().lower()
        if p not in PROVIDERS:
            raise click.UsageError(f"{opt}: unknown provider {n!r}: expected one of {', '.join(sorted(PROVIDERS))}")
        out.append(p)
    return out


def check_symbols(symbols: list[str] | None, opt: str = "--symbols") -> list[str] | None:
    """Symbols as given, or ``provider:symbol``: a malformed one (empty, with spaces or
    control characters) or a prefix that names no provider is an error."""
    from .channels import split_target
    from .streaming.registry import PROVIDERS

    for s in symbols or ():
        head, sep, _ = s.partition(":")
        if sep and head.isalpha() and head.islower() and head not in PROVIDERS:
            raise click.UsageError(f"{opt}: unknown provider {head!r} in {s!r}: expected one of {', '.join(sorted(PROVIDERS))}")
        try:
            _, sym = split_target(s)
        except ValueError as e:
            raise click.UsageError(f"{opt}: {e}") from None
        if not sym.strip() or any(c.isspace() or not c.isprintable() for c in sym) or "," in sym:
            raise click.UsageError(f"{opt}: malformed symbol {s!r}")
    return symbols


def check_range(start_ns: int | None, end_ns: int | None, start: str | None = None, end: str | None = None) -> None:
    """``--start``/``--end`` (already parsed to ns): an empty range is an error."""
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise click.UsageError(f"empty time range: --end ({end or end_ns}) is not after --start ({start or start_ns})")


def require_recording(root: str, fs: pafs.FileSystem | None) -> None:
    """A local root must exist: reading a path that is not there is a typo, not an empty recording."""
    import os

    if fs is None and not os.path.isdir(root):
        raise click.UsageError(f"no recording at {root!r} (no such directory)")


def check_writable(root: str, fs: pafs.FileSystem | None) -> None:
    """A local root this command will write into: a file is created and removed in it
    first, so a read-only or unwritable root fails here, before anything is changed.
    (An object store's access was checked when it was opened.)"""
    import os
    import tempfile

    require_recording(root, fs)
    if fs is not None:
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".wrdata-write-check-", dir=root)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise click.UsageError(f"cannot write to {root}: {e.strerror or e}") from None
