"""OpenNebula objects: read from oned's XML-RPC API (once per object per action) and wrapped.

Endpoint and credentials are found the way OpenNebula's CLI finds them: ONE_XMLRPC, then
~/.one/one_endpoint, then /var/lib/one/.one/one_endpoint, then http://localhost:2633/RPC2;
ONE_AUTH (a file), then ~/.one/one_auth, then /var/lib/one/.one/one_auth.
"""
from __future__ import annotations

import os
import xmlrpc.client
from xml.parsers.expat import ExpatError
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TypeVar

from lxml import etree

from . import deadline
from .errors import DriverError
from .validate import natural

DEFAULT_ENDPOINT = "http://localhost:2633/RPC2"
LIVE_MIGRATE_ACTION = 2     # a history record's ACTION when a live migration ended it (VMActions.h, 5.x-7.x)


def _first_file(*candidates: Optional[str]) -> Optional[Path]:
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def endpoint() -> str:
    if os.environ.get("ONE_XMLRPC"):
        return os.environ["ONE_XMLRPC"]
    home = os.environ.get("HOME", "")
    f = _first_file(f"{home}/.one/one_endpoint", "/var/lib/one/.one/one_endpoint")
    if f:
        text = f.read_text().strip()
        if text:
            return text
    return DEFAULT_ENDPOINT


def session() -> str:
    home = os.environ.get("HOME", "")
    f = _first_file(os.environ.get("ONE_AUTH"), f"{home}/.one/one_auth", "/var/lib/one/.one/one_auth")
    if not f:
        raise DriverError("no OpenNebula credentials: set ONE_AUTH or create ~/.one/one_auth")
    return f.read_text().strip()


XmlT = TypeVar("XmlT", bound="Xml")


class Xml:
    def __init__(self, root: etree._Element):
        self.root = root

    @classmethod
    def parse(cls: type[XmlT], text: str) -> XmlT:
        if not isinstance(text, str):
            raise DriverError(f"OpenNebula sent {type(text).__name__} where an XML document was due")
        try:
            # huge_tree: a VM with many snapshots or a long template is a large document, not an attack
            # (entities are not resolved, nothing is fetched)
            return cls(etree.fromstring(text.encode(), etree.XMLParser(resolve_entities=False, no_network=True,
                                                                       huge_tree=True)))
        except etree.XMLSyntaxError as err:
            raise DriverError(f"cannot parse OpenNebula XML: {err}")

    def text(self, path: str, default: str = "") -> str:
        value = self.root.findtext(path)
        return default if value is None else value.strip()

    def template(self, path: str = "TEMPLATE") -> dict[str, str]:
        node = self.root.find(path)
        if node is None:
            return {}
        return {c.tag: (c.text or "").strip() for c in node if len(c) == 0}


@dataclass
class DiskInfo:
    disk_id: int
    attrs: dict

    def get(self, key: str, default: str = "") -> str:
        return self.attrs.get(key, default)

    @property
    def image_id(self) -> Optional[int]:
        v = self.get("IMAGE_ID")
        return natural(v)

    @property
    def cloned(self) -> bool:
        """A private copy for this VM (CLONE=YES, or a volatile disk)."""
        return self.image_id is None or self.get("CLONE", "YES").upper() != "NO"

    @property
    def size_mb(self) -> int:
        v = self.get("SIZE")
        return natural(v) or 0


class VmDoc(Xml):
    # oned's LCM states (include/VirtualMachine.h) the driver acts on
    HOTPLUG_SAVEAS = 26                              # disk-saveas of a running VM
    FROM_FRONTEND = frozenset({9, 31, 49, 50})       # PROLOG_RESUME, PROLOG_UNDEPLOY and their failures
    TO_FRONTEND = frozenset({10, 30, 41, 42})        # EPILOG_STOP, EPILOG_UNDEPLOY and their failures

    @property
    def id(self) -> int:
        return int(self.text("ID"))

    @property
    def lcm_state(self) -> int:
        return natural(self.text("LCM_STATE", "0") or "0") or 0

    @property
    def saving_as_running(self) -> bool:
        """A disk-saveas of the running VM (its disk is copied live)."""
        return self.lcm_state == self.HOTPLUG_SAVEAS

    @property
    def coming_from_frontend(self) -> bool:
        """Resumed or redeployed: its directory comes back from the front-end."""
        return self.lcm_state in self.FROM_FRONTEND

    @property
    def going_to_frontend(self) -> bool:
        """Stopped or undeployed: its directory goes to the front-end."""
        return self.lcm_state in self.TO_FRONTEND

    @property
    def deploy_id(self) -> str:
        return self.text("DEPLOY_ID")

    def system_datastores(self) -> list[int]:
        """The system datastores oned has the VM in: its current history record's, then the one
        before (a migration between them names both). Empty: oned keeps no history of it yet."""
        ids = [natural((h.findtext("DS_ID") or "").strip()) for h in self.root.findall("HISTORY_RECORDS/HISTORY")]
        known = [i for i in ids if i is not None]
        return list(dict.fromkeys(reversed(known[-2:])))

    def domain_datastores(self) -> list[int]:
        """During a live migration: the system datastores whose VM-directory paths the running
        domain may name, the new one first. A live migration to another datastore renames no path
        of a block disk (libvirt cannot change a disk's source without copying it), so the domain
        keeps the paths of the datastore it last started in: the record it leaves or any record
        of the run of live migrations before it."""
        records = self.root.findall("HISTORY_RECORDS/HISTORY")

        def ds(record) -> Optional[int]:
            return natural((record.findtext("DS_ID") or "").strip())
        run = records[-2:]
        for i in range(len(records) - 2, 0, -1):
            if natural((records[i - 1].findtext("ACTION") or "").strip()) != LIVE_MIGRATE_ACTION:
                break
            run.insert(0, records[i - 1])
        found = [d for d in map(ds, reversed(run)) if d is not None]
        return list(dict.fromkeys(found))

    def saveas(self) -> Optional[SaveAs]:
        """The disk save-as oned has in progress for this VM (the disk it flagged
        HOTPLUG_SAVE_AS_ACTIVE, 5.6-7.4): what its CPDS line must name."""
        for disk in self.disks():
            if disk.get("HOTPLUG_SAVE_AS_ACTIVE").upper() == "YES":
                image_id = natural(disk.get("HOTPLUG_SAVE_AS"))
                snap = disk.get("HOTPLUG_SAVE_AS_SNAPSHOT_ID") or "-1"
                return SaveAs(disk.disk_id, image_id, disk.get("HOTPLUG_SAVE_AS_SOURCE"),
                              -1 if snap == "-1" else natural(snap))
        return None

    def disks(self) -> list[DiskInfo]:
        out = []
        for d in self.root.findall("TEMPLATE/DISK"):
            attrs = {c.tag: (c.text or "").strip() for c in d}
            if natural(attrs.get("DISK_ID", "")) is not None:
                out.append(DiskInfo(int(attrs["DISK_ID"]), attrs))
        return out

    def disk(self, disk_id: int) -> DiskInfo:
        for d in self.disks():
            if d.disk_id == disk_id:
                return d
        raise DriverError(f"VM {self.id} has no disk {disk_id}")


@dataclass(frozen=True)
class SaveAs:
    disk_id: int
    image_id: Optional[int]         # None: oned gave no (readable) image id
    source: str                     # the new image's SOURCE ("" before oned knows it)
    snap_id: Optional[int]          # -1: the disk itself


class DatastoreDoc(Xml):
    @property
    def id(self) -> int:
        return int(self.text("ID"))

    @property
    def tm_mad(self) -> str:
        return self.text("TM_MAD")


class ImageDoc(Xml):
    @property
    def id(self) -> int:
        return int(self.text("ID"))


class _TimedTransport(xmlrpc.client.Transport):
    """Each read waits at most `timeout` (instead of a process-wide socket default)."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn

    def abort(self) -> None:
        """Wakes a read blocked in another thread."""
        conn = self._connection[1] if self._connection else None
        deadline.cut(getattr(conn, "sock", None))


class _TimedSafeTransport(xmlrpc.client.SafeTransport, _TimedTransport):
    def __init__(self, timeout: float):
        xmlrpc.client.SafeTransport.__init__(self)
        self.timeout = timeout


ONED_DEADLINE = 120.0                # seconds one call may take, whole (linstor_un.conf ONED_DEADLINE)


class OneApi:
    """oned's XML-RPC API; each object is fetched at most once per action. Every call has an
    overall deadline: an oned that trickles its answer a byte at a time cannot hold an action."""

    def __init__(self, url: Optional[str] = None, auth: Optional[str] = None, timeout: float = 30,
                 deadline: float = ONED_DEADLINE):
        self.url = url or endpoint()
        self._auth = auth
        self.timeout = timeout
        self.deadline = deadline
        self._cache: dict[tuple, Xml] = {}
        self._proxy: Optional[xmlrpc.client.ServerProxy] = None
        self._transport: Optional[_TimedTransport] = None

    def _call(self, method: str, *args):
        if self._proxy is None:
            cls = _TimedSafeTransport if self.url.startswith("https") else _TimedTransport
            self._transport = cls(self.timeout)
            self._proxy = xmlrpc.client.ServerProxy(self.url, allow_none=False, transport=self._transport)
        auth = self._auth or session()
        try:
            reply = deadline.within(self.deadline, f"oned {method}",
                                    lambda: getattr(self._proxy, method)(auth, *args))
        except deadline.Expired:
            if self._transport is not None:
                self._transport.abort()
            self._proxy = None
            raise DriverError(f"oned at {self.url} gave no complete answer to {method} within {self.deadline:.0f}s")
        except xmlrpc.client.Fault as err:
            raise DriverError(f"oned at {self.url} answered {method} with a fault: {err.faultString}")
        except xmlrpc.client.ProtocolError as err:
            raise DriverError(f"oned at {self.url} answered {method} with HTTP {err.errcode} {err.errmsg}")
        except OSError as err:
            raise DriverError(f"cannot reach oned at {self.url} ({method}): {err}")
        except (xmlrpc.client.Error, ExpatError, ValueError, TypeError, OverflowError) as err:
            raise DriverError(f"oned at {self.url} answered {method} with something that is not an XML-RPC "
                              f"reply ({type(err).__name__})")
        if not isinstance(reply, (list, tuple)) or len(reply) < 2 or not isinstance(reply[0], bool):
            raise DriverError(f"oned at {self.url} answered {method} with an unexpected reply")
        if not reply[0]:
            raise DriverError(f"oned refused {method}: {reply[1]}")
        return reply[1]

    def _info(self, method: str, cls, oid: int, *extra):
        key = (method, oid, *extra)
        if key not in self._cache:
            self._cache[key] = cls.parse(self._call(method, int(oid), *extra))
        return self._cache[key]

    def vm(self, vm_id: int) -> VmDoc:
        return self._info("one.vm.info", VmDoc, vm_id)

    def datastore(self, ds_id: int, decrypt: bool = False) -> DatastoreDoc:
        """decrypt: with the attributes oned keeps encrypted (DATASTORE_ENCRYPTED_ATTR: a restic
        backup datastore's RESTIC_PASSWORD) in clear, as OpenNebula's own drivers read a backup
        datastore (TransferManager::Datastore: `info(true)`)."""
        if decrypt:
            return self._info("one.datastore.info", DatastoreDoc, ds_id, True)
        return self._info("one.datastore.info", DatastoreDoc, ds_id)

    def image(self, image_id: int) -> ImageDoc:
        return self._info("one.image.info", ImageDoc, image_id)
