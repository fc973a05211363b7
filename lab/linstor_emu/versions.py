"""Which LINSTOR controller the emulator plays: its version, and the REST API version that release
reports (from its own REST API document: spec.py; JsonGenTypes.REST_API_VERSION is generated from
the same document). Routes per release come from the document too (spec.ReleaseSpec)."""
from __future__ import annotations

import re

from . import spec

# The newest release the driver claims, the lab's default. Its REST API document and handlers are
# read at v1.34.0-rc.1, the newest tag of linstor-server at hand (spec.py plays 1.34.0 from it).
NEWEST = "1.34.0"


def parse(version: str) -> tuple[int, int, int]:
    parts = [int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3]]
    return tuple(parts + [0] * (3 - len(parts)))        # type: ignore[return-value]


def rest_api_version(version: str) -> str:
    """The REST API version the controller release `version` reports."""
    return spec.rest_api_version(version)
