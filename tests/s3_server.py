"""An S3-compatible server on loopback (moto in server mode) for tests of ``s3://`` runs.

The session-scoped ``s3_server`` fixture starts moto's ``ThreadedMotoServer`` on
127.0.0.1, points pyarrow at it through environment variables and creates one bucket.
URIs stay plain (``s3://bucket/path``, as a user writes them), so nasfleet's ``join``
works on them, and every process that inherits the environment (the ``nasfleet`` CLI,
a Ray cluster started afterwards, its workers) reaches the same server.

Why the environment and not URI query parameters: pyarrow (>= 15) reads the endpoint
from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` and the region from ``AWS_REGION`` /
``AWS_DEFAULT_REGION``; a URI with ``?endpoint_override=...&scheme=http`` also works for
``FileSystem.from_uri`` but breaks as soon as a path is appended to it. Credentials must
be set even though moto accepts any: an anonymous client sends the body in aws-chunked
encoding with a trailing checksum, and moto stores that framing as the object's bytes.

Use it in a test module with ``from s3_server import s3_server  # noqa: F401``, or for
the whole suite with ``pytest_plugins = ["s3_server"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

BUCKET = "nasfleet-test"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    """``http://127.0.0.1:PORT``."""
    bucket: str
    aws_env: dict[str, str]
    """Only the variables that point a client at this server (already set in ``os.environ``)."""

    def uri(self, path: str = "") -> str:
        """``s3://<bucket>/<path>``: works with ``pyarrow.fs.FileSystem.from_uri`` here and
        in any subprocess started with :attr:`env` (or inheriting this process's env)."""
        path = path.strip("/")
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"

    def query_uri(self, path: str = "") -> str:
        """The same location with the endpoint in the URI itself
        (``?endpoint_override=127.0.0.1:PORT&scheme=http``): needs no endpoint variable,
        only the credentials. Paths must be joined with ``storage.join``, which keeps the
        query at the end."""
        return f"{self.uri(path)}?endpoint_override={self.endpoint.removeprefix('http://')}&scheme=http"

    def unique_uri(self, name: str = "run") -> str:
        """A URI under a fresh prefix, so tests sharing the server never see each other's objects."""
        return self.uri(f"{uuid.uuid4().hex[:12]}/{name}")

    @property
    def env(self) -> dict[str, str]:
        """The whole environment for a subprocess: the current one plus the S3 settings."""
        return {**os.environ, **self.aws_env}

    def filesystem(self):  # -> pyarrow.fs.S3FileSystem
        """A filesystem for this server built explicitly (no environment needed); paths are ``bucket/key``."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=self.aws_env["AWS_ACCESS_KEY_ID"],
            secret_key=self.aws_env["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.endpoint,
            region=REGION,
        )


# Settings that could send a client elsewhere (a real profile, a session token from the
# developer's shell, a config file) are removed while the server runs.
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
          "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
          "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 with one bucket; the test process's env points at it."""
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (the dev extra)")
    import pyarrow.fs as pafs

    # Port 0: the OS picks a free port when the server binds, so there is no race with
    # another process between choosing a port and binding it (ThreadedMotoServer.start
    # would wait forever if its bind failed).
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    access_log = logging.getLogger("werkzeug")  # one line per request otherwise, in every failure report
    log_level = access_log.level
    access_log.setLevel(logging.WARNING)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    no_config = tmp_path_factory.mktemp("aws") / "none"  # never created: no profiles, no files
    aws_env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,  # wins over AWS_ENDPOINT_URL, so set both
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(no_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(no_config),
    }
    patch = pytest.MonkeyPatch()
    try:
        for name in _UNSET:
            patch.delenv(name, raising=False)
        for name, value in aws_env.items():
            patch.setenv(name, value)
        s3 = S3Server(endpoint=endpoint, bucket=BUCKET, aws_env=aws_env)
        fs = pafs.S3FileSystem(
            access_key="testing", secret_key="testing", endpoint_override=endpoint, region=REGION,
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        yield s3
    finally:
        patch.undo()
        server.stop()
        access_log.setLevel(log_level)
