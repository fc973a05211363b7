"""Which LINSTOR controller the emulator plays: its version, the REST API version that release
reports, and the behaviour changes the emulator follows release by release.

REST API versions: linstor-server's `JsonGenTypes.REST_API_VERSION` per release, matched by
what its docs/CHANGELOG-OPENAPI.md adds at each REST version against CHANGELOG.md:
- 1.19.x says "API Version 1.14.0";
- 1.20.0 adds SnapshotVolumeNode with a state (REST 1.15.0), 1.20.1 the NodeConnection API (1.16.0);
- 1.21.0 query-size-info (1.17.0), 1.22.0 multi-snapshots (1.18.0), 1.23.0 query-all-size-info
  (1.19.0), 1.24.0 backup queues (1.20.0; 1.24.1's K8s rollback limit 1.20.1), 1.25.0
  effective props (1.20.2), 1.26.0 RG peer slots and storpool rename (1.21.0), 1.27.0 volume
  passphrases and force restore (1.22.0), 1.28.0 x-replicas-on-different and keep-tiebreaker
  (1.23.0), 1.30.0 clone into another resource group / layer stack and split snapshot
  properties (1.24.0), 1.31.0 replication_states and GET encryption/passphrase (1.25.0), 1.32.0
  snapshot PUT and the clone's override_props/delete_props (1.26.0), 1.33.x reports 1.27.0.
"""
from __future__ import annotations

import re

_REST_BY_RELEASE = [          # (first release, REST API version it reports)
    ((1, 19, 0), "1.14.0"), ((1, 20, 0), "1.15.0"), ((1, 20, 1), "1.16.0"), ((1, 21, 0), "1.17.0"),
    ((1, 22, 0), "1.18.0"), ((1, 23, 0), "1.19.0"), ((1, 24, 0), "1.20.0"), ((1, 24, 1), "1.20.1"),
    ((1, 25, 0), "1.20.2"), ((1, 26, 0), "1.21.0"), ((1, 27, 0), "1.22.0"), ((1, 28, 0), "1.23.0"),
    ((1, 30, 0), "1.24.0"), ((1, 31, 0), "1.25.0"), ((1, 32, 0), "1.26.0"), ((1, 33, 0), "1.27.0"),
]


def parse(version: str) -> tuple[int, int, int]:
    parts = [int(x) for x in re.findall(r"\d+", version)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))        # type: ignore[return-value]


def rest_api_version(version: str) -> str:
    """The REST API version the controller release `version` reports."""
    have = parse(version)
    found = _REST_BY_RELEASE[0][1]
    for first, rest in _REST_BY_RELEASE:
        if have >= first:
            found = rest
    return found


# Handlers of routes a release does not have yet: a controller without them answers 404.
ROUTE_SINCE = {
    "snapshot_multi": (1, 22, 0),     # CHANGELOG-OPENAPI 1.18.0: POST /v1/action(s)/snapshot/multi
    "query_size_info": (1, 21, 0),    # CHANGELOG-OPENAPI 1.17.0: resource-groups/{rg}/query-size-info
    "modify_snapshot": (1, 32, 0),    # CHANGELOG-OPENAPI 1.26.0: PUT .../snapshots/{snapshot}
}
