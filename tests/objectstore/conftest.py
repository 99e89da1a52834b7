"""A real S3 API server (moto, server mode) on loopback for the object-store tests."""

from __future__ import annotations

import pytest
from s3_helpers import S3Server, aws_env

from wrdata.storage import remote


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, tmp_path, monkeypatch):
    """The server, with this process's AWS environment isolated (test keys, no ~/.aws,
    the journal home under tmp_path, ``AWS_ENDPOINT_URL_S3`` naming the server so nothing
    can reach AWS) and wrdata's filesystem cache emptied."""
    for k in list(__import__("os").environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    for k, v in aws_env(tmp_path, s3_server.endpoint).items():
        monkeypatch.setenv(k, v)
    remote.clear_cache()
    yield s3_server
    remote.clear_cache()
