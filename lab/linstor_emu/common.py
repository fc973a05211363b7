"""What every part of the emulated controller shares: names, constants, property rules, filters."""
from __future__ import annotations

import re
import time
import random
import uuid
from typing import Any, Callable, Optional

from . import versions

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{1,47}$")
DISKLESS_POOL = "DfltDisklessStorPool"
DEFAULT_RG = "DfltRscGrp"
TIEBREAKER_PROP = "DrbdOptions/auto-add-quorum-tiebreaker"
AUTO_QUORUM_PROP = "DrbdOptions/auto-quorum"
QUORUM_PROP = "DrbdOptions/Resource/quorum"
ON_NO_QUORUM_PROP = "DrbdOptions/Resource/on-no-quorum"


def _pool_props(kind: str, name: str) -> dict:
    """The storage pool properties `linstor storage-pool create <kind> ...` leaves (python-linstor's
    storage pool create: lvmthin takes `vg/thinpool` and sets LvmVg and ThinPool, zfs ZPool,
    zfsthin ZPoolThin; file pools their directory)."""
    vg = "linstor_" + name.lower()
    return {"LVM": {"StorDriver/LvmVg": vg},
            "LVM_THIN": {"StorDriver/LvmVg": vg, "StorDriver/ThinPool": "thinpool"},
            "ZFS": {"StorDriver/ZPool": vg}, "ZFS_THIN": {"StorDriver/ZPoolThin": vg},
            "FILE": {"StorDriver/FileDir": f"/var/lib/linstor-pools/{name}"},
            "FILE_THIN": {"StorDriver/FileDir": f"/var/lib/linstor-pools/{name}"}}.get(kind, {})

Handler = Callable[..., tuple[int, Any]]

PROP_KEY_MAX = 256          # PropsContainer.PATH_MAX_LENGTH
PROP_VALUE_MAX = 4096       # PROPS_CONTAINERS.PROP_VALUE VARCHAR(4096) (init-db.sql)
# The whitelisted keys (outside Aux/) the lab's users set, with the values LINSTOR accepts for them
# (a regular expression; "" = any): the DRBD options come from drbdsetup's option list, the rest
# from GeneratedPropertyRules. Any other key is refused as LINSTOR refuses a key it does not know.
WHITELIST = {
    "StorPoolName": r"[A-Za-z_][A-Za-z0-9_-]{1,47}",
    "DrbdOptions/Net/allow-two-primaries": r"yes|no",
    "DrbdOptions/Net/protocol": r"A|B|C",
    "DrbdOptions/Resource/quorum": r"off|majority|all|[0-9]+",
    "DrbdOptions/Resource/on-no-quorum": r"io-error|suspend-io",
    "DrbdOptions/auto-quorum": r"io-error|suspend-io|disabled",
    "DrbdOptions/auto-add-quorum-tiebreaker": r"true|false|yes|no",
    "FileSystem/Type": r"ext4|xfs",
    "FileSystem/MkfsParams": "",
    "PeerSlotsNewResource": r"[0-9]+",
}


def _default_ctrl_props(config: dict) -> dict:
    """What a new controller's database holds: up to 1.30 `DrbdOptions/auto-quorum io-error`
    (linstor-server's migrations set it on /CTRLCFG); 1.31.0's Migration_2025_02_19_AutoQuorumInheritRework
    deleted the property (auto-quorum works on DrbdOptions/Resource/quorum itself since)."""
    if versions.parse(config.get("version", versions.NEWEST)) < (1, 31, 0):
        return {AUTO_QUORUM_PROP: "io-error"}
    return {}


def _uuid() -> str:
    # random like LINSTOR's, without a urandom call each (listings make tens of thousands)
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _props_match(props: dict, filters: list[str]) -> bool:
    for item in filters:
        key, eq, value = item.partition("=")
        if key not in props or (eq and props[key] != value):
            return False
    return True


def _name_filter(query: dict, key: str) -> Optional[set[str]]:
    values = query.get(key)
    if not values:
        return None
    out = set()
    for v in values:
        out.update(x.upper() for x in v.split(",") if x)
    return out
