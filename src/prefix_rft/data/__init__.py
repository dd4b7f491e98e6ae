"""Training data for Prefix-RFT: rows with `prompt`, `demos` (or `demo`) and `answer`.

`prompt` is text or a list of chat messages; `demos` a list of demonstration strings (one is drawn per hybrid rollout);
`answer` the verifiable gold answer that reward functions receive. Rows without demos train on-policy only.
"""

from prefix_rft.data.loading import (
    LUFFY_HUB_NAME,
    first_rows,
    from_luffy,
    load_luffy_openr1,
    load_prefix_rft_dataset,
    row_demos,
)
from prefix_rft.data.validation import ValidationReport, validate_rows

__all__ = [
    "LUFFY_HUB_NAME",
    "ValidationReport",
    "first_rows",
    "from_luffy",
    "load_luffy_openr1",
    "load_prefix_rft_dataset",
    "row_demos",
    "validate_rows",
]
