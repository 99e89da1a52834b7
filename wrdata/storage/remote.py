"""Object stores: the filesystem of a root URI, checking it, and where its journal lives.

A dataset root is a local path or a URI that pyarrow understands (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``hdfs://...``, ``file:///data``). Everything in wrdata reaches
it through :func:`wrdata.storage.fs.resolve_root`, which builds the filesystem here,
once per process and store (cached), and checks it on first use, so a missing bucket,
wrong credentials or an unreachable endpoint are one clear line
(:class:`FileNotFoundError`, :class:`PermissionError`, :class:`ConnectionError`)
instead of an empty listing or a stack of AWS SDK messages.

S3 and S3-compatible stores
---------------------------
- **Credentials** come from where the AWS SDK looks for them (pyarrow's default chain):
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``
  and ``~/.aws/credentials``/``~/.aws/config``, web identity, the instance metadata
  service. wrdata never takes them as arguments, never logs them and never writes them
  anywhere: a URI with credentials in it (``s3://KEY:SECRET@bucket``) is refused, since
  a root appears in process lists, logs and status output.
- **Endpoint**: ``s3_endpoint=`` (the CLI's ``--s3-endpoint``), else
  ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (the AWS SDKs' own variables), else
  AWS. ``http://host:port`` for MinIO, Ceph, moto and the like (path-style addressing).
- **Region**: ``?region=`` in the URI, else ``AWS_REGION``/``AWS_DEFAULT_REGION``, else
  the bucket's own region asked from AWS, or ``us-east-1`` with a custom endpoint.
- **Timeouts**: 5 s to connect and 60 s without progress on a request (the AWS SDK's
  3 s default aborts a large server-side copy on slower stores); pyarrow's standard
  retry strategy (3 attempts) on top.

What pyarrow's S3 filesystem does (pyarrow 26, measured against a real S3 API, moto in
server mode, by the requests it served; ``docs/scale-out.md`` has the figures):

- ``open_output_stream(key)`` starts a multipart upload; the object appears **only when
  the stream is closed** (CompleteMultipartUpload). A killed process leaves no object,
  only an incomplete multipart upload (invisible to listings; an
  ``AbortIncompleteMultipartUpload`` lifecycle rule reclaims its storage). But an
  output stream that is garbage-collected *without* ``close()`` (an exception while
  writing) is closed by its destructor, which **completes** the upload: a partial
  object would appear under its key. That is why a sealed file is always written under
  a temporary dot-name key and only then moved to its final key.
- ``move(src, dst)`` is ``CopyObject`` (a server-side copy: no bytes through the
  client, but time proportional to the size, at the store's internal copy speed, and
  limited to 5 GiB per object) plus ``DeleteObject`` of the source (and a zero-byte
  directory marker ``PutObject`` for the source's folder). The destination appears
  atomically and complete; the move as a whole is not atomic (a crash between copy and
  delete leaves the temporary dot-file behind, which every reader skips and
  ``wrdata verify`` reports).
- Listing a folder is one ``ListObjectsV2`` per 1000 keys; opening a file for reading
  costs a ``HEAD`` unless its size is known (wrdata passes the size from the listing),
  then ranged ``GET`` s for the footer and the column chunks read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

log = logging.getLogger("wrdata.storage")

#: environment variables naming an S3 endpoint, in the order the AWS SDKs read them
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 60.0

_CACHE: dict[tuple, tuple[pafs.FileSystem, str | None, str]] = {}  # key -> (fs, endpoint, path)
_CACHE_LOCK = threading.Lock()
_S3_PARAMS = ("region", "endpoint_override", "scheme")


def is_uri(root: str) -> bool:
    """Whether ``root`` names a filesystem by URI (``scheme://...``) rather than a local path."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", root))


def _parse(root: str) -> urllib.parse.SplitResult:
    u = urllib.parse.urlsplit(root)
    if u.username is not None or u.password is not None:
        raise ValueError(
            f"credentials in the root URI are not accepted ({redact(root)}): they would show in process lists and logs; "
            "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials"
        )
    return u


def redact(uri: str) -> str:
    """``uri`` without user info or query (what may be logged of a root)."""
    if not is_uri(uri):
        return uri
    u = urllib.parse.urlsplit(uri)
    host = u.hostname or ""
    if u.port:
        host = f"{host}:{u.port}"
    return urllib.parse.urlunsplit((u.scheme, host, u.path, "", ""))


def env_endpoint() -> str | None:
    for name in ENDPOINT_ENV:
        v = os.environ.get(name)
        if v:
            return v
    return None


def open_filesystem(root: str, *, s3_endpoint: str | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path within it)`` of a root URI, checked on first use and cached
    per store for the life of the process. Raises ``ValueError`` for a malformed URI and
    :class:`OSError` subclasses (one line each) when the store cannot be used."""
    u = _parse(root)
    scheme = u.scheme.lower()
    params = dict(urllib.parse.parse_qsl(u.query))
    if s3_endpoint and scheme != "s3":
        raise ValueError(f"--s3-endpoint applies to s3:// roots, not {redact(root)}")
    if scheme == "s3":
        bad = set(params) - set(_S3_PARAMS)
        if bad:
            raise ValueError(f"unknown option(s) {', '.join(sorted(bad))} in {redact(root)}: expected some of {', '.join(_S3_PARAMS)}")
        if not u.hostname:
            raise ValueError(f"no bucket in {redact(root)}: expected s3://bucket/prefix")
        endpoint = s3_endpoint or params.get("endpoint_override") or env_endpoint()
        region = params.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        key = ("s3", u.hostname, endpoint, region, params.get("scheme"))
        path = f"{u.hostname}{u.path}".rstrip("/")
    else:
        endpoint = None
        key = (scheme, root)
        path = None
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        fs, _, cached_path = hit
        return fs, path if path is not None else cached_path
    if scheme == "s3":
        fs = _s3(u.hostname, endpoint, region, params.get("scheme"))
    else:
        try:
            fs, path = pafs.FileSystem.from_uri(root)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(f"cannot open {redact(root)}: {_first_line(e)}") from None
        except OSError as e:
            raise storage_error(e, redact(root), None) from None
    if not isinstance(fs, pafs.LocalFileSystem):
        check_root(fs, path, what=redact(root), endpoint=endpoint)
    path = path.rstrip("/") or path
    with _CACHE_LOCK:
        _CACHE.setdefault(key, (fs, endpoint, path))
    return fs, path


def _s3(bucket: str, endpoint: str | None, region: str | None, scheme: str | None) -> pafs.S3FileSystem:
    kw: dict = dict(connect_timeout=CONNECT_TIMEOUT, request_timeout=REQUEST_TIMEOUT)
    if endpoint:
        if "://" in endpoint:
            ep = urllib.parse.urlsplit(endpoint)
            if ep.username or ep.password:
                raise ValueError("credentials in the S3 endpoint URL are not accepted: use the AWS environment variables or config files")
            kw["scheme"] = scheme or ep.scheme
        elif scheme:
            kw["scheme"] = scheme
        kw["endpoint_override"] = endpoint
        # S3-compatible stores mostly ignore the region, but requests are signed with one
        kw["region"] = region or "us-east-1"
    else:
        if scheme:
            kw["scheme"] = scheme
        if region:
            kw["region"] = region
        else:
            try:
                kw["region"] = pafs.resolve_s3_region(bucket)
            except OSError as e:
                raise storage_error(e, f"s3://{bucket}", None) from None
    try:
        return pafs.S3FileSystem(**kw)
    except (pa.ArrowInvalid, ValueError) as e:
        raise ValueError(f"cannot configure S3 for bucket {bucket!r}: {_first_line(e)}") from None


def clear_cache() -> None:
    """Forget the filesystems built so far (tests; a changed environment)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_DENIED = ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "INVALID_ACCESS_KEY_ID", "SignatureDoesNotMatch",
           "SIGNATURE_DOES_NOT_MATCH", "INVALID_CLIENT_TOKEN_ID", "InvalidToken", "ExpiredToken", "HTTP response code: 403",
           "response code 403", "Forbidden")
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not connect", "Couldn't connect", "Could not resolve", "Connection refused",
                "Timeout was reached")


def storage_error(e: BaseException, what: str, endpoint: str | None) -> OSError:
    """A one-line :class:`OSError` of the right kind for a failed object-store call."""
    text = str(e)
    where = f" at {endpoint}" if endpoint else ""
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return FileNotFoundError(f"{what}: the bucket does not exist{where}")
    if any(k in text for k in _DENIED):
        code = _aws_code(text)
        why = f" ({code})" if code != "access denied" else ""
        return PermissionError(
            f"{what}: access denied{where}{why}: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, ~/.aws/credentials) and the bucket's policy"
        )
    if any(k in text for k in _UNREACHABLE):
        return ConnectionError(f"{what}: cannot reach the object store{where}: {_detail(text)}")
    if isinstance(e, OSError) and not isinstance(e, pa.ArrowException) and type(e) is not OSError:
        return type(e)(f"{what}: {_first_line(e)}")
    return OSError(f"{what}: {_first_line(e)}")


def _aws_code(text: str) -> str:
    m = re.search(r"AWS Error ([A-Z_]+)", text)
    return m.group(1).lower().replace("_", " ") if m else (text.strip().splitlines() or ["error"])[0]


def _detail(text: str) -> str:
    m = re.search(r"Details: ([^\n]+)", text)
    return m.group(1).strip() if m else (text.strip().splitlines() or ["error"])[0]


def check_root(fs: pafs.FileSystem, path: str, *, what: str, endpoint: str | None = None, write: bool = False) -> None:
    """Fail with one clear line if the store behind ``path`` cannot be listed (or, with
    ``write``, written): a bucket that does not exist, wrong credentials, an endpoint
    that does not answer. Costs one ``HEAD`` of the bucket and one listing (plus a small
    object written and deleted with ``write``)."""
    try:
        if fs.type_name == "s3":
            bucket = path.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise FileNotFoundError(f"{what}: the bucket {bucket!r} does not exist{f' at {endpoint}' if endpoint else ''}")
        fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if write:
            # a small object written and deleted under _wrdata/ (readers skip _ folders):
            # read-only credentials show now, not at the first seal
            probe_dir = f"{path}/_wrdata/probe-{uuid.uuid4().hex}"
            if fs.type_name != "s3":  # filesystems with real directories need the parents
                fs.create_dir(probe_dir, recursive=True)
            with fs.open_output_stream(f"{probe_dir}/check") as out:
                out.write(b"wrdata write check\n")
            fs.delete_file(f"{probe_dir}/check")
            if fs.type_name != "s3":
                fs.delete_dir(probe_dir)
    except (FileNotFoundError, PermissionError, ConnectionError) as e:
        if what in str(e):
            raise
        raise storage_error(e, what, endpoint) from None
    except (OSError, pa.ArrowException) as e:
        raise storage_error(e, what, endpoint) from None


def endpoint_of(fs: pafs.FileSystem) -> str | None:
    """The endpoint an S3 filesystem talks to (None for AWS itself or another filesystem)."""
    for cached, endpoint, _path in list(_CACHE.values()):
        if cached is fs:
            return endpoint
    if fs.type_name != "s3":
        return None
    try:  # a filesystem built elsewhere: its pickling arguments name the endpoint
        return fs.__reduce__()[1][0].get("endpoint_override") or None
    except Exception:  # noqa: BLE001 - only used in messages
        return None


# ---------------------------------------------------------------------------------------
# the journal of a remote root


def root_identity(root: str, filesystem: pafs.FileSystem | str | None = None) -> str:
    """``scheme://bucket/prefix`` naming a dataset whatever the endpoint, credentials or
    options used to reach it (so one store reached two ways keeps one journal)."""
    root = os.fspath(root)
    if isinstance(filesystem, str):
        base = root_identity(filesystem)
        return f"{base.rstrip('/')}/{root.strip('/')}" if root.strip("/") not in ("", ".") else base
    if filesystem is not None:
        scheme = {"gcs": "gs"}.get(filesystem.type_name, filesystem.type_name)
        path = urllib.parse.urlsplit(root)._replace(scheme="", query="").geturl().lstrip("/") if is_uri(root) else root.lstrip("/")
        return f"{scheme}://{path.rstrip('/')}"
    if is_uri(root):
        u = _parse(root)
        return f"{u.scheme.lower()}://{u.hostname or ''}{u.path.rstrip('/')}"
    return os.path.abspath(root)


def journal_home() -> str:
    """Where journals of remote roots live by default: ``$XDG_STATE_HOME/wrdata/journal``
    (``~/.local/state/wrdata/journal``). State, not cache: a journal holds data that is
    nowhere else until it is sealed and uploaded, and cache directories get wiped."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "wrdata", "journal")


def remote_journal_dir(identity: str) -> str:
    """``<journal_home>/<scheme>-<bucket>-<prefix>-<hash>``: readable, and unique per root."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.replace("://", "-")).strip("_")[:80]
    return os.path.join(journal_home(), f"{readable}-{digest}")
