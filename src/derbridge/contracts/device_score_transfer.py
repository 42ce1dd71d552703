"""F4 · device-score-transfer (Asset Hub → DERMS): the score file's manifest and where to fetch it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from derbridge.contracts.common import Contract, Id, ProgramCode

TYPE = "device-score-transfer.v1"
ACK_TYPE = "device-score-transfer-ack.v1"

SCORE_FILE_COLUMNS = (
    "program_code",
    "head_end_system",
    "nic_id",
    "device_id",
    "score",
    "eligible",
    "ineligibility_reason",
    "computed_at",
)
"""The columns of a score file, in order (flows.md F4)."""


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"


class FileManifest(Contract):
    """What a file must be, checked by the target before it loads a single row."""

    file_id: Id
    generated_at: AwareDatetime
    row_count: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    byte_size: int = Field(ge=0)
    compression: Compression = Compression.NONE


class FileLocation(Contract):
    """Where a claim-checked file lies: a file store and the key within it."""

    store: str = Field(max_length=32, examples=["local", "sftp"])
    key: str = Field(max_length=500)


class ScoreFileManifest(FileManifest):
    scoring_model_version: str = Field(max_length=32)
    programs: list[ProgramCode] = Field(min_length=1)


class ScoreTransfer(Contract):
    """F4 payload: only the manifest and the location travel; the file goes through the file store."""

    manifest: ScoreFileManifest
    location: FileLocation
