"""Run-length encoding of masks, as the submission CSV holds it: it lives in
:mod:`hbseg.data.rle`; these names stay importable from here."""

from hbseg.data.rle import (
    RLEError,
    check_order,
    decode_rle,
    encode_masks,
    encode_rle,
    format_runs,
    mask_runs,
    parse_rle,
)

__all__ = ["RLEError", "encode_rle", "encode_masks", "mask_runs", "format_runs", "parse_rle",
           "check_order", "decode_rle"]
