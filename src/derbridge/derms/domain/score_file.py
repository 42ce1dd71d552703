"""F4 · the score file's content rules, and which file becomes the current snapshot (pure).

A score file that matches its manifest must also be a correct score file: the header is
``SCORE_FILE_COLUMNS``, every program among the manifest's, identifiers present and short enough, scores
within 0 to 100, a reason exactly when a device is not eligible, no device twice in a program
(:func:`check_score_rows`). A file that breaks them was written wrong by its sender: retrying cannot help,
so the DERMS refuses it (:class:`InvalidScoreFile`, acknowledged REJECTED). A file generated before the
current snapshot is stale (:func:`snapshot_is_stale`): the current one stays.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from derbridge.contracts.device_score_transfer import SCORE_FILE_COLUMNS

MAX_ID_LENGTH = 64
MAX_REASON_LENGTH = 32

SCORE_ROW_COLUMNS = ("program_code", "head_end_system", "nic_id", "score", "eligible", "ineligibility_reason")
"""The columns of the checked rows, as the DERMS loads them."""


class InvalidScoreFile(Exception):
    """The file is what its manifest describes, but its content breaks the score file's rules."""


def snapshot_is_stale(generated_at: datetime, current_generated_at: datetime | None) -> bool:
    """True when a file generated at ``generated_at`` is older than the current snapshot's (None: there is
    no current snapshot): it is not loaded and the current snapshot stays."""
    return current_generated_at is not None and generated_at < current_generated_at


def _first_line(bad: pa.Array) -> int | None:
    """The file line (header = line 1) of the first true value of ``bad``, if any."""
    hits = pc.indices_nonzero(bad.fill_null(True))
    return None if len(hits) == 0 else int(hits[0].as_py()) + 2


def check_score_rows(table: pa.Table, programs: list[str]) -> pa.Table:
    """The rows of a score file as read (every column, in the file's order) checked against the rules; the
    :data:`SCORE_ROW_COLUMNS` of them. Raises :class:`InvalidScoreFile` with the first problem.

    Line numbers count the header as line 1 (the score file's fields hold no line breaks).
    """
    if tuple(table.column_names) != SCORE_FILE_COLUMNS:
        raise InvalidScoreFile(
            f"the header is {','.join(table.column_names)}; a score file has {','.join(SCORE_FILE_COLUMNS)}"
        )

    def column(name: str) -> pa.Array:
        return table.column(name).combine_chunks()

    eligible = column("eligible")
    reason = column("ineligibility_reason")

    def missing_or_longer(values: pa.Array, limit: int) -> pa.Array:
        return pc.invert(pc.less_equal(pc.utf8_length(values), limit))  # null stays null: counted as bad

    score = column("score")
    # Each check is true (or null, read as true) on a bad row; Kleene logic keeps "false and null" false.
    checks: list[tuple[pa.Array, str]] = [
        (
            pc.invert(pc.is_in(column("program_code"), value_set=pa.array(programs, pa.string()))),
            "a program_code missing or not among the manifest's programs",
        ),
        (
            missing_or_longer(column("head_end_system"), MAX_ID_LENGTH),
            f"no head_end_system, or a longer one than {MAX_ID_LENGTH} characters",
        ),
        (
            missing_or_longer(column("nic_id"), MAX_ID_LENGTH),
            f"no nic_id, or a longer one than {MAX_ID_LENGTH} characters",
        ),
        (
            pc.invert(pc.and_kleene(pc.greater_equal(score, 0.0), pc.less_equal(score, 100.0))),
            "a score missing or outside 0 to 100",
        ),
        (pc.is_null(eligible), "eligible missing (true or false)"),
        (pc.and_kleene(eligible, pc.is_valid(reason)), "an ineligibility_reason on an eligible device"),
        (
            pc.and_kleene(pc.invert(eligible), missing_or_longer(reason, MAX_REASON_LENGTH)),
            f"an ineligible device without an ineligibility_reason (or one longer than {MAX_REASON_LENGTH} characters)",
        ),
    ]
    for bad, what in checks:
        line = _first_line(bad)
        if line is not None:
            raise InvalidScoreFile(f"line {line}: {what}")
    keys = table.select(["program_code", "head_end_system", "nic_id"])
    counts = keys.group_by(["program_code", "head_end_system", "nic_id"]).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if repeated.num_rows:
        first = repeated.slice(0, 1).to_pylist()[0]
        raise InvalidScoreFile(
            f"device {first['head_end_system']}:{first['nic_id']} appears {first['count_all']} times "
            f"in program {first['program_code']}"
        )
    return table.select(list(SCORE_ROW_COLUMNS))
