"""Rules for the values oned, LINSTOR and datastore templates hand the driver: numbers, ids, host
names. Every module that reads such a value uses these (not str.isdigit(), not int() alone)."""
from __future__ import annotations

import re
from typing import Optional

from .errors import DriverError

HOST_RE = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")
DOMAIN_RE = re.compile(r"^[A-Za-z0-9_.:+-]{1,128}$")


def integer(value: str, what: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,18}", str(value)):
        raise DriverError(f"invalid {what} '{value}': expected a number")
    return int(value)


def natural(value: str) -> Optional[int]:
    """A property or attribute that should hold a number: ASCII digits only (str.isdigit() also
    takes '²' and '٣', which int() then refuses or reads as another number), else None."""
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value or "") else None


def snapshot_id(value: str, what: str = "snapshot id") -> int:
    """A snapshot id: 0 or more (oned numbers snapshots from 0; -1 means none, not one to act on)."""
    n = integer(value, what)
    if n < 0:
        raise DriverError(f"invalid {what} '{value}': no snapshot given")
    return n


def valid_host(host: str) -> str:
    if not HOST_RE.match(host) or host.startswith("-"):
        raise DriverError(f"invalid host name '{host}'")
    return host


def valid_domain(name: str) -> str:
    """A libvirt domain name as oned makes them (`one-<vm id>`, or a DEPLOY_ID an operator set)."""
    if not DOMAIN_RE.match(name) or name.startswith("-"):
        raise DriverError(f"invalid domain name '{name}'")
    return name
