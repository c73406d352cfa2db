"""The submission CSV (``image_name,class,rle``): written by inference, read by evaluation,
ensembles and pseudo-labels. It lives in :mod:`hbseg.data.submission`, below training,
which reads it for pseudo-labels; these names stay importable from here."""

from hbseg.data.submission import (
    HEADER,
    Submission,
    SubmissionWriter,
    read_submission,
    submission_classes,
    write_submission,
)

__all__ = ["HEADER", "SubmissionWriter", "write_submission", "Submission", "read_submission",
           "submission_classes"]
