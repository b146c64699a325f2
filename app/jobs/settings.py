"""JobSettings: the `jobs:` section of the configuration (or the JOBS environment variable, as JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class JobSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    storage: Literal["local", "s3"] = Field(default="local", description="where job files are kept")
    storage_dir: str = Field(default="data/files", description="the local directory (a volume in compose)")
    min_free_bytes: int = Field(
        default=1024**3, ge=0, description="local storage: writes refused (503) while its disk has less free"
    )
    s3_bucket: str = ""
    s3_endpoint: str | None = Field(default=None, description="unset: AWS; else e.g. http://seaweedfs:8333")
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    file_ttl_s: float = Field(default=30 * 86_400, gt=0, description="files expire this long after upload")
    team_max_bytes: int = Field(default=10 * 1024**3, ge=1, description="stored bytes per team (all files)")
    team_max_files: int = Field(default=10_000, ge=2, description="files per team, its batches' outputs included")
    team_max_batches: int = Field(default=100, ge=1, description="batches and tasks per team not finished yet")
    team_max_running: int = Field(
        default=2, ge=1, description="batches and tasks of one team running at once, across the replicas"
    )
    max_lines: int = Field(default=50_000, ge=1, description="requests per batch input file (OpenAI's limit)")
    max_file_bytes: int = Field(default=200 * 1024**2, ge=1, description="bytes per input file (OpenAI's)")
    max_line_bytes: int = Field(default=2 * 1024**2, ge=1, le=8 * 1024**2, description="bytes per input line")

    concurrency: int = Field(default=2, ge=0, le=64, description="jobs each gateway process runs at once")
    chunk_lines: int = Field(default=500, ge=1, le=10_000, description="lines per checkpoint")
    heartbeat_s: int = Field(default=10, ge=1, description="a job not heard of this long is another's to run")
    sweep_s: int = Field(default=5, ge=1, description="how often each worker looks for abandoned jobs")
    files_sweep_s: int = Field(default=60, ge=1, le=60, description="how often expired files are deleted")
    result_url_ttl_s: float = Field(default=86_400, gt=0, description="lifetime of a signed result URL")
