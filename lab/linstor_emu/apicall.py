"""ApiCallRc entries and lists, built the way the LINSTOR controller builds them.

Codes come from python-linstor's copy of LINSTOR's shared constants, so the emulator and the
client agree on every bit. A ret_code is a Java long: error and warning codes are negative in JSON.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Optional

from linstor import sharedconsts as C


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


@dataclass
class Rc:
    code: int                      # type bits | code (e.g. C.FAIL_EXISTS_RSC_DFN)
    message: str
    obj_mask: int = 0              # e.g. C.MASK_RSC_DFN
    op_mask: int = 0               # e.g. C.MASK_CRT
    cause: Optional[str] = None
    details: Optional[str] = None
    correction: Optional[str] = None
    obj_refs: dict = field(default_factory=dict)
    error_report_ids: list = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return (self.code & C.MASK_ERROR) == C.MASK_ERROR

    def to_json(self) -> dict:
        ret = self.code | self.obj_mask | self.op_mask
        out = {
            "ret_code": signed64(ret),
            "message": self.message,
            "obj_refs": {k: str(v) for k, v in self.obj_refs.items()},
            "created_at": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(),
        }
        for key in ("cause", "details", "correction"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.error_report_ids:
            out["error_report_ids"] = list(self.error_report_ids)
        return out


class ApiError(Exception):
    """A refusal: carries the ApiCallRc list (and anything logged before it)."""

    def __init__(self, rc: Rc, before: Optional[list] = None):
        super().__init__(rc.message)
        self.rcs = list(before or []) + [rc]


def http_status(rcs: list, success: int) -> int:
    """LINSTOR's ApiCallRcRestUtils.toResponse mapping."""
    status = success
    for rc in rcs:
        if not rc.is_error:
            continue
        code = rc.code & C.MASK_BITS_CODE
        if 300 <= code < 400:
            return 404
        if 400 <= code < 500:
            return 403
        status = 500
    return status


def success(message: str, obj_mask: int, op_mask: int, code: int = 0, **kw) -> Rc:
    if not code:
        code = {C.MASK_CRT: C.CREATED, C.MASK_MOD: C.MODIFIED, C.MASK_DEL: C.DELETED}[op_mask]
    return Rc(code, message, obj_mask, op_mask, **kw)
