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
from typing import Optional

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
        t = {k: v for k, v in template.items()}
        conf = conf or {}
        g = lambda k: t.get(k, "").strip()   # noqa: E731

        controllers = _words(g("LS_CONTROLLERS") or conf.get("LS_CONTROLLERS", "") or "localhost")
        for c in controllers:
            if not URI_RE.match(c):
                raise DriverError(f"datastore attribute LS_CONTROLLERS: '{c}' is not a controller address")
        files = {}
        for attr in ("LS_CERTFILE", "LS_KEYFILE", "LS_CAFILE"):
            v = g(attr)
            if v and not Path(v).is_file():
                raise DriverError(f"datastore attribute {attr}: file '{v}' not found")
            files[attr] = v or None
        if bool(files["LS_CERTFILE"]) != bool(files["LS_KEYFILE"]):
            raise DriverError("datastore attributes LS_CERTFILE and LS_KEYFILE must be set together")

        clone_mode = (g("CLONE_MODE") or "copy").lower()
        if clone_mode not in ("copy", "snapshot"):
            raise DriverError(f"'{g('CLONE_MODE')}' is not valid 'CLONE_MODE'.")

        regex = g("DO_NOT_PLACE_WITH_REGEX") or None
        if regex:
            try:
                re.compile(regex)
            except re.error as err:
                raise DriverError(f"datastore attribute DO_NOT_PLACE_WITH_REGEX: invalid regex: {err}")
        layers = [x.upper() for x in _words(g("LAYER_LIST"))]
        for x in layers:
            if x not in LAYERS:
                raise DriverError(f"datastore attribute LAYER_LIST: unknown layer '{x}'")
        providers = [x.upper() for x in _words(g("PROVIDERS"))]
        for x in providers:
            if x not in PROVIDERS:
                raise DriverError(f"datastore attribute PROVIDERS: unknown provider '{x}'")
        for attr in ("REPLICAS_ON_SAME", "REPLICAS_ON_DIFFERENT"):
            for item in _words(g(attr)):
                if not PROP_RE.match(item):
                    raise DriverError(f"datastore attribute {attr}: '{item}' is not a property name")
        rg = _names("RESOURCE_GROUP", g("RESOURCE_GROUP"))
        if len(rg) > 1:
            raise DriverError("datastore attribute RESOURCE_GROUP: only one resource group may be given")
        diskless = _names("DISKLESS_POOL", g("DISKLESS_POOL")) or ["DfltDisklessStorPool"]
        replica_count = _count("REPLICA_COUNT", g("REPLICA_COUNT")) or _count("AUTO_PLACE", g("AUTO_PLACE"))
        placement = Placement(
            resource_group=rg[0] if rg else None,
            node_list=_names("NODE_LIST", g("NODE_LIST")),
            replica_count=replica_count,
            storage_pools=_names("STORAGE_POOL", g("STORAGE_POOL")),
            diskless_pool=diskless[0],
            layer_list=layers,
            providers=providers,
            replicas_on_same=_words(g("REPLICAS_ON_SAME")),
            replicas_on_different=_words(g("REPLICAS_ON_DIFFERENT")),
            do_not_place_with=_names("DO_NOT_PLACE_WITH", g("DO_NOT_PLACE_WITH")),
            do_not_place_with_regex=regex,
            prefer_node=yes_no("PREFER_NODE", g("PREFER_NODE")),
            encryption=yes_no("ENCRYPTION", g("ENCRYPTION")),
        )
        checkpoint_count = (_count("CHECKPOINT_REPLICA_COUNT", g("CHECKPOINT_REPLICA_COUNT"))
                            or _count("CHECKPOINT_AUTO_PLACE", g("CHECKPOINT_AUTO_PLACE")))
        checkpoint = placement if checkpoint_count is None else replace(placement, replica_count=checkpoint_count,
                                                                         prefer_node=False)
        staging = g("STAGING_DIR") or conf.get("STAGING_DIR") or "/var/tmp"
        if not staging.startswith("/"):
            raise DriverError(f"datastore attribute STAGING_DIR: '{staging}' is not an absolute path")
        imports = ImportSettings(no_decompress=yes_no("NO_DECOMPRESS", g("NO_DECOMPRESS")),
                                 limit_transfer_bw=_rate("LIMIT_TRANSFER_BW", g("LIMIT_TRANSFER_BW")),
                                 restricted_dirs=_dirs("RESTRICTED_DIRS", g("RESTRICTED_DIRS")),
                                 safe_dirs=_dirs("SAFE_DIRS", g("SAFE_DIRS")))
        return cls(ds_id=ds_id, tm_mad=tm_mad,
                   connection=Connection(controllers, files["LS_CERTFILE"], files["LS_KEYFILE"], files["LS_CAFILE"]),
                   placement=placement, checkpoint_placement=checkpoint, clone_mode=clone_mode,
                   bridge_list=_hosts("BRIDGE_LIST", g("BRIDGE_LIST")), staging_dir=staging,
                   dd_block_size=dd_block_size(conf), imports=imports)
