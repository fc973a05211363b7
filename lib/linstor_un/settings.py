"""Datastore settings: the template attributes of a linstor_un datastore, typed and validated.

Parsed once per action from the datastore template (with linstor_un.conf for the few driver-wide
defaults), before anything is created: a wrong value is one clear error naming the attribute.
Names, defaults and meanings are those of the bash driver (reference/bash-driver.md §2).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import DriverError
from .validate import HOST_RE, natural

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{1,47}$")
PROP_RE = re.compile(r"^[A-Za-z0-9_/.:-]+(=[^\s]*)?$")
LAYERS = {"DRBD", "LUKS", "NVME", "WRITECACHE", "CACHE", "BCACHE", "STORAGE", "OPENFLEX"}
PROVIDERS = {"LVM", "LVM_THIN", "ZFS", "ZFS_THIN", "FILE", "FILE_THIN", "SPDK", "REMOTE_SPDK", "EXOS",
             "STORAGE_SPACES", "STORAGE_SPACES_THIN", "EBS_TARGET", "EBS_INIT", "DISKLESS"}
URI_RE = re.compile(r"^((linstor|linstor\+ssl|http|https)://)?[A-Za-z0-9_.:\[\]-]+(:[0-9]+)?/?$")


def _words(value: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", value.strip()) if w]


def _names(attr: str, value: str) -> list[str]:
    names = _words(value)
    for n in names:
        if not NAME_RE.match(n):
            raise DriverError(f"datastore attribute {attr}: '{n}' is not a valid LINSTOR name")
    return names


def _hosts(attr: str, value: str) -> list[str]:
    hosts = _words(value)
    for h in hosts:
        if not HOST_RE.match(h) or h.startswith("-"):
            raise DriverError(f"datastore attribute {attr}: '{h}' is not a host name")
    return hosts


def yes_no(attr: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("", "no", "false", "0"):
        return False
    if v in ("yes", "true", "1"):
        return True
    raise DriverError(f"datastore attribute {attr}: '{value}' is not yes or no")


def _count(attr: str, value: str) -> Optional[int]:
    v = value.strip()
    if not v:
        return None
    count = natural(v)           # ASCII digits only: '²' or '٣' are not counts
    if count is None or not 1 <= count <= 16:
        raise DriverError(f"datastore attribute {attr}: '{value}' is not a replica count (1-16)")
    return count


def read_conf(path: Path) -> dict[str, str]:
    """linstor_un.conf as the bash driver had it: KEY=VALUE lines, `${VAR:-default}` allowed.

    Nothing is executed: a value is taken literally, except that `${X:-default}` yields default."""
    out: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.strip()
        m = re.match(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m or line.startswith("#"):
            continue
        try:
            words = shlex.split(m.group(2), comments=True)
        except ValueError:
            continue
        value = words[0] if words else ""
        d = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-(.*)\}", value)
        out[m.group(1)] = d.group(1) if d else value
    return out


def command_timeout(conf: dict[str, str], default: float) -> float:
    """linstor_un.conf SSH_COMMAND_TIMEOUT: seconds a host command that is not a bulk copy may run."""
    return seconds_setting(conf, "SSH_COMMAND_TIMEOUT", default)


def oned_deadline(conf: dict[str, str], default: float) -> float:
    """linstor_un.conf ONED_DEADLINE: seconds one call to oned's API may take, whole."""
    return seconds_setting(conf, "ONED_DEADLINE", default)


def seconds_setting(conf: dict[str, str], key: str, default: float) -> float:
    value = conf.get(key, "").strip()
    if not value:
        return default
    # ASCII digits only, like every number the driver reads (float() would also take '٣',
    # '1e9', 'inf')
    seconds = float(value) if re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", value) else 0.0
    if not seconds > 0:
        raise DriverError(f"linstor_un.conf {key}: '{value}' is not a number of seconds")
    return seconds


@dataclass(frozen=True)
class Connection:
    controllers: list[str]
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    cafile: Optional[str] = None


@dataclass(frozen=True)
class Placement:
    resource_group: Optional[str] = None
    node_list: list[str] = field(default_factory=list)
    replica_count: Optional[int] = None
    storage_pools: list[str] = field(default_factory=list)
    diskless_pool: str = "DfltDisklessStorPool"
    layer_list: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    replicas_on_same: list[str] = field(default_factory=list)
    replicas_on_different: list[str] = field(default_factory=list)
    do_not_place_with: list[str] = field(default_factory=list)
    do_not_place_with_regex: Optional[str] = None
    prefer_node: bool = False
    encryption: bool = False

    def filters(self) -> dict:
        """The template's placement filters, as LINSTOR's autoplacer takes them (python-linstor's
        keyword arguments of resource_auto_place and resource_group_spawn)."""
        return dict(storage_pool=self.storage_pools or None,
                    do_not_place_with=self.do_not_place_with or None,
                    do_not_place_with_regex=self.do_not_place_with_regex,
                    replicas_on_same=self.replicas_on_same or None,
                    replicas_on_different=self.replicas_on_different or None,
                    layer_list=self.layer_list or None,
                    provider_list=self.providers or None)

    def require(self) -> None:
        """Placement must be decidable: a resource group, or nodes/a count plus storage pools."""
        if self.resource_group:
            return
        if not self.node_list and not self.replica_count:
            raise DriverError("Datastore template missing 'RESOURCE_GROUP', 'NODE_LIST' or 'REPLICA_COUNT' attribute.")
        if not self.storage_pools:
            raise DriverError("Datastore template missing 'STORAGE_POOL' attribute.")


@dataclass(frozen=True)
class ImportSettings:
    """How DS cp and stat read an image source (OpenNebula's fs datastore attributes)."""
    no_decompress: bool = False
    limit_transfer_bw: int = 0              # bytes per second; 0: no limit
    restricted_dirs: list[str] = field(default_factory=list)
    safe_dirs: list[str] = field(default_factory=list)


def _rate(attr: str, value: str) -> int:
    v = value.strip()
    if not v:
        return 0
    if not re.fullmatch(r"[0-9]{1,15}", v):
        raise DriverError(f"datastore attribute {attr}: '{value}' is not a number of bytes per second")
    return int(v)


def _dirs(attr: str, value: str) -> list[str]:
    dirs = value.split()
    for d in dirs:
        if not d.startswith("/"):
            raise DriverError(f"datastore attribute {attr}: '{d}' is not an absolute path")
    return dirs


def dd_block_size(conf: dict[str, str]) -> str:
    """linstor_un.conf DD_BLOCK_SIZE: dd's bs= for host copies (bytes, or with k or M)."""
    bs = conf.get("DD_BLOCK_SIZE", "").strip() or "64k"
    if not re.fullmatch(r"[1-9][0-9]{0,9}[kKmM]?", bs):
        raise DriverError(f"linstor_un.conf DD_BLOCK_SIZE: '{bs}' is not a dd block size (like 64k or 1M)")
    return bs


@dataclass(frozen=True)
class DatastoreSettings:
    ds_id: int
    tm_mad: str
    connection: Connection
    placement: Placement
    checkpoint_placement: Placement
    clone_mode: str = "copy"
    bridge_list: list[str] = field(default_factory=list)
    staging_dir: str = "/var/tmp"
    dd_block_size: str = "64k"
    imports: ImportSettings = field(default_factory=ImportSettings)

    @classmethod
    def parse(cls, ds_id: int, template: dict[str, str], conf: Optional[dict[str, str]] = None,
              tm_mad: str = "linstor_un") -> "DatastoreSettings":
        conf = conf or {}
        # every attribute of the table, parsed (and refused in one line) before any is used
        def raw(attr: str, rule: Rule) -> str:
            value = template.get(attr, "").strip()
            return (value or conf.get(attr, "").strip()) if rule.conf else value
        v = {attr: rule.parse(attr, raw(attr, rule)) for attr, rule in ATTRIBUTES.items()}
        if bool(v["LS_CERTFILE"]) != bool(v["LS_KEYFILE"]):
            raise DriverError("datastore attributes LS_CERTFILE and LS_KEYFILE must be set together")
        if len(v["RESOURCE_GROUP"]) > 1:
            raise DriverError("datastore attribute RESOURCE_GROUP: only one resource group may be given")
        placement = Placement(
            resource_group=v["RESOURCE_GROUP"][0] if v["RESOURCE_GROUP"] else None,
            node_list=v["NODE_LIST"],
            replica_count=v["REPLICA_COUNT"] or v["AUTO_PLACE"],
            storage_pools=v["STORAGE_POOL"],
            diskless_pool=(v["DISKLESS_POOL"] or ["DfltDisklessStorPool"])[0],
            layer_list=v["LAYER_LIST"],
            providers=v["PROVIDERS"],
            replicas_on_same=v["REPLICAS_ON_SAME"],
            replicas_on_different=v["REPLICAS_ON_DIFFERENT"],
            do_not_place_with=v["DO_NOT_PLACE_WITH"],
            do_not_place_with_regex=v["DO_NOT_PLACE_WITH_REGEX"],
            prefer_node=v["PREFER_NODE"],
            encryption=v["ENCRYPTION"],
        )
        checkpoint_count = v["CHECKPOINT_REPLICA_COUNT"] or v["CHECKPOINT_AUTO_PLACE"]
        checkpoint = placement if checkpoint_count is None else replace(placement, replica_count=checkpoint_count,
                                                                         prefer_node=False)
        imports = ImportSettings(no_decompress=v["NO_DECOMPRESS"], limit_transfer_bw=v["LIMIT_TRANSFER_BW"],
                                 restricted_dirs=v["RESTRICTED_DIRS"], safe_dirs=v["SAFE_DIRS"])
        return cls(ds_id=ds_id, tm_mad=tm_mad,
                   connection=Connection(v["LS_CONTROLLERS"], v["LS_CERTFILE"], v["LS_KEYFILE"], v["LS_CAFILE"]),
                   placement=placement, checkpoint_placement=checkpoint, clone_mode=v["CLONE_MODE"],
                   bridge_list=v["BRIDGE_LIST"], staging_dir=v["STAGING_DIR"],
                   dd_block_size=dd_block_size(conf), imports=imports)


# ---- the attributes: one parser each (attribute name, raw value) -> typed value ------------------

def _controllers(attr: str, value: str) -> list[str]:
    controllers = _words(value or "localhost")
    for c in controllers:
        if not URI_RE.match(c):
            raise DriverError(f"datastore attribute {attr}: '{c}' is not a controller address")
    return controllers


def _file(attr: str, value: str) -> Optional[str]:
    if value and not Path(value).is_file():
        raise DriverError(f"datastore attribute {attr}: file '{value}' not found")
    return value or None


def _clone_mode(attr: str, value: str) -> str:
    mode = (value or "copy").lower()
    if mode not in ("copy", "snapshot"):
        raise DriverError(f"'{value}' is not valid 'CLONE_MODE'.")        # the bash driver's message
    return mode


def _regex(attr: str, value: str) -> Optional[str]:
    if not value:
        return None
    try:
        re.compile(value)
    except re.error as err:
        raise DriverError(f"datastore attribute {attr}: invalid regex: {err}")
    return value


def _one_of(known: set[str], what: str) -> Callable[[str, str], list[str]]:
    def parse(attr: str, value: str) -> list[str]:
        items = [x.upper() for x in _words(value)]
        for x in items:
            if x not in known:
                raise DriverError(f"datastore attribute {attr}: unknown {what} '{x}'")
        return items
    return parse


def _props(attr: str, value: str) -> list[str]:
    items = _words(value)
    for item in items:
        if not PROP_RE.match(item):
            raise DriverError(f"datastore attribute {attr}: '{item}' is not a property name")
    return items


def _absolute(attr: str, value: str) -> str:
    path = value or "/var/tmp"
    if not path.startswith("/"):
        raise DriverError(f"datastore attribute {attr}: '{path}' is not an absolute path")
    return path


@dataclass(frozen=True)
class Rule:
    parse: Callable[[str, str], Any]
    conf: bool = False              # linstor_un.conf gives the default (the bash driver's driver-wide ones)


ATTRIBUTES: dict[str, Rule] = {
    "LS_CONTROLLERS": Rule(_controllers, conf=True),
    "LS_CERTFILE": Rule(_file), "LS_KEYFILE": Rule(_file), "LS_CAFILE": Rule(_file),
    "CLONE_MODE": Rule(_clone_mode),
    "RESOURCE_GROUP": Rule(_names), "NODE_LIST": Rule(_names), "STORAGE_POOL": Rule(_names),
    "DISKLESS_POOL": Rule(_names), "DO_NOT_PLACE_WITH": Rule(_names),
    "REPLICA_COUNT": Rule(_count), "AUTO_PLACE": Rule(_count),
    "CHECKPOINT_REPLICA_COUNT": Rule(_count), "CHECKPOINT_AUTO_PLACE": Rule(_count),
    "DO_NOT_PLACE_WITH_REGEX": Rule(_regex),
    "LAYER_LIST": Rule(_one_of(LAYERS, "layer")), "PROVIDERS": Rule(_one_of(PROVIDERS, "provider")),
    "REPLICAS_ON_SAME": Rule(_props), "REPLICAS_ON_DIFFERENT": Rule(_props),
    "PREFER_NODE": Rule(yes_no), "ENCRYPTION": Rule(yes_no), "NO_DECOMPRESS": Rule(yes_no),
    "BRIDGE_LIST": Rule(_hosts),
    "STAGING_DIR": Rule(_absolute, conf=True),
    "LIMIT_TRANSFER_BW": Rule(_rate), "RESTRICTED_DIRS": Rule(_dirs), "SAFE_DIRS": Rule(_dirs),
}
