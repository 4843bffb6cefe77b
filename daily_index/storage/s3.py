"""The S3-compatible backend's client: dagster-aws's S3Resource, made safe for R2.

boto3 >= 1.36 sends CRC32 checksum headers on every upload, which R2 rejects; the client
is built with checksums "when_required" so only operations that need them send any. The
same settings work for MinIO, moto's server and AWS S3.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from dagster_aws.s3 import S3Resource


class R2S3Resource(S3Resource):
    """S3Resource whose client R2 accepts (no unrequested checksums, region `auto`)."""

    max_pool_connections: int = 32

    def get_client(self) -> Any:
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "s3",
            region_name=self.region_name or "auto",
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
                max_pool_connections=self.max_pool_connections,
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"},
            ),
        )
