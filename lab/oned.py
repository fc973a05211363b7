"""An emulated oned XML-RPC endpoint with the documents a real oned 7.x returns.

Tests describe objects with small dataclasses (a VM with these disks on this host in this LCM
state, a datastore with this template...); the endpoint renders them on skeletons captured from a
real oned 7.0.2 (lab/data/*.xml), so element names and order are the real ones. It answers
one.system.version, one.vm.info, one.datastore.info, one.image.info, one.host.info and
one.hostpool.info, checks the session string like oned's core auth, and records every call.
"""
from __future__ import annotations

import base64

import copy
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable, Optional
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from lxml import etree

DATA = Path(__file__).resolve().parent / "data"
AUTHENTICATION = 0x0100     # oned's ErrorCode values (RequestManager.h)
NO_EXISTS = 0x0400

# VM states (VirtualMachine.h) used by the drivers
VM_STATES = {"INIT": 0, "PENDING": 1, "HOLD": 2, "ACTIVE": 3, "STOPPED": 4, "SUSPENDED": 5, "DONE": 6,
             "POWEROFF": 8, "UNDEPLOYED": 9}
LCM_STATES = {"LCM_INIT": 0, "PROLOG": 1, "BOOT": 2, "RUNNING": 3, "MIGRATE": 4, "SAVE_STOP": 5,
              "SAVE_SUSPEND": 6, "SAVE_MIGRATE": 7, "PROLOG_MIGRATE": 8, "PROLOG_RESUME": 9, "EPILOG_STOP": 10,
              "EPILOG": 11, "SHUTDOWN": 12, "CLEANUP_RESUBMIT": 15, "HOTPLUG": 17, "SHUTDOWN_POWEROFF": 18,
              "BOOT_UNKNOWN": 19, "BOOT_POWEROFF": 20, "BOOT_SUSPENDED": 21, "BOOT_STOPPED": 22,
              "CLEANUP_DELETE": 23, "HOTPLUG_SNAPSHOT": 24, "HOTPLUG_SAVEAS": 26, "EPILOG_UNDEPLOY": 30,
              "PROLOG_UNDEPLOY": 31, "BOOT_UNDEPLOY": 32, "PROLOG_MIGRATE_POWEROFF": 47,
              "PROLOG_MIGRATE_SUSPEND": 48, "DISK_SNAPSHOT_POWEROFF": 51, "DISK_SNAPSHOT_REVERT_POWEROFF": 52,
              "DISK_SNAPSHOT_DELETE_POWEROFF": 53, "DISK_SNAPSHOT": 57, "DISK_SNAPSHOT_DELETE": 59,
              "PROLOG_MIGRATE_UNKNOWN": 60, "DISK_RESIZE": 63, "DISK_RESIZE_POWEROFF": 64,
              "HOTPLUG_PROLOG_POWEROFF": 54, "HOTPLUG_EPILOG_POWEROFF": 55, "BACKUP": 69,
              "BACKUP_POWEROFF": 70, "RESTORE": 71}


def _skeleton(name: str) -> etree._Element:
    return etree.parse(str(DATA / name), etree.XMLParser(remove_blank_text=True, strip_cdata=False)).getroot()


def _set(root: etree._Element, path: str, value, cdata: bool = False) -> None:
    node = root.find(path)
    if node is None:
        raise KeyError(path)
    node.text = etree.CDATA(str(value)) if cdata else str(value)


def _template(tag: str, attrs: dict) -> etree._Element:
    """An OpenNebula template element; nested dicts become vector attributes, lists repeat."""
    el = etree.Element(tag)
    for key in sorted(attrs):
        value = attrs[key]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                el.append(_template(key, item))
            else:
                child = etree.SubElement(el, key)
                child.text = etree.CDATA(str(item))
    return el


def _snapshots_el(disk_id: Optional[int], snaps: list[dict], current_base: int = -1) -> etree._Element:
    el = etree.Element("SNAPSHOTS")
    for key, value in (("ALLOW_ORPHANS", "NO"), ("CURRENT_BASE", current_base)):
        etree.SubElement(el, key).text = etree.CDATA(str(value))
    if disk_id is not None:
        etree.SubElement(el, "DISK_ID").text = etree.CDATA(str(disk_id))
    next_id = max([s["id"] for s in snaps], default=-1) + 1
    etree.SubElement(el, "NEXT_SNAPSHOT").text = etree.CDATA(str(next_id))
    for s in snaps:
        se = etree.SubElement(el, "SNAPSHOT")
        if s.get("active"):
            etree.SubElement(se, "ACTIVE").text = etree.CDATA("YES")
        if s.get("children"):
            etree.SubElement(se, "CHILDREN").text = etree.CDATA(str(s["children"]))
        etree.SubElement(se, "DATE").text = etree.CDATA(str(s.get("date", int(time.time()))))
        etree.SubElement(se, "ID").text = etree.CDATA(str(s["id"]))
        etree.SubElement(se, "NAME").text = etree.CDATA(str(s.get("name", f"snap-{s['id']}")))
        etree.SubElement(se, "PARENT").text = etree.CDATA(str(s.get("parent", -1)))
        etree.SubElement(se, "SIZE").text = etree.CDATA(str(s.get("size", 0)))
    return el


@dataclass
class Datastore:
    id: int
    name: str
    type: str = "IMAGE_DS"              # IMAGE_DS, SYSTEM_DS, FILE_DS
    ds_mad: str = "linstor_un"
    tm_mad: str = "linstor_un"
    template: dict = field(default_factory=dict)
    total_mb: int = 0
    free_mb: int = 0
    used_mb: int = 0
    images: list[int] = field(default_factory=list)
    cluster_ids: list[int] = field(default_factory=lambda: [0])
    base_path: str = ""                 # default: <DATASTORE_LOCATION>/<id>

    def element(self) -> etree._Element:
        system = self.type == "SYSTEM_DS"
        root = _skeleton("onedatastore-show-103-system.xml" if system else "onedatastore-show-102-image.xml")
        _set(root, "ID", self.id)
        _set(root, "NAME", self.name)
        _set(root, "DS_MAD", "-" if system else self.ds_mad, cdata=True)
        _set(root, "TM_MAD", self.tm_mad, cdata=True)
        _set(root, "BASE_PATH", self.base_path or f"/var/lib/one//datastores/{self.id}", cdata=True)
        _set(root, "TYPE", {"IMAGE_DS": 0, "SYSTEM_DS": 1, "FILE_DS": 2, "BACKUP_DS": 3}[self.type])
        _set(root, "DISK_TYPE", 2 if self.template.get("DISK_TYPE", "BLOCK") == "BLOCK" else 0)
        for key in ("TOTAL_MB", "FREE_MB", "USED_MB"):
            _set(root, key, getattr(self, key.lower()))
        clusters = root.find("CLUSTERS")
        clusters.clear()
        for cid in self.cluster_ids:
            etree.SubElement(clusters, "ID").text = str(cid)
        images = root.find("IMAGES")
        images.clear()
        for iid in self.images:
            etree.SubElement(images, "ID").text = str(iid)
        base = {"ALLOW_ORPHANS": "NO", "DISK_TYPE": "BLOCK", "TM_MAD": self.tm_mad, "TYPE": self.type,
                "RESTRICTED_DIRS": "/", "SAFE_DIRS": "/var/tmp", "PERSISTENT_SNAPSHOTS": "YES"}
        if system:
            base.update({"SHARED": "YES", "DS_MIGRATE": "YES"})
        elif self.type == "BACKUP_DS":
            base = {"DS_MAD": self.ds_mad, "TM_MAD": "-", "TYPE": "BACKUP_DS"}
        else:
            base.update({"DS_MAD": self.ds_mad, "LN_TARGET": "NONE", "CLONE_TARGET": "SELF"})
        root.replace(root.find("TEMPLATE"), _template("TEMPLATE", {**base, **self.template}))
        return root


@dataclass
class Image:
    id: int
    name: str
    datastore_id: int
    datastore: str = "linstor_images"
    source: str = ""
    path: str = ""
    format: str = "raw"
    fs: str = ""
    size: int = 1024
    persistent: bool = False
    type: int = 0                       # 0 OS, 1 CDROM, 2 DATABLOCK
    state: int = 1                      # 1 READY, 2 USED, 4 LOCKED
    vms: list[int] = field(default_factory=list)
    clones: list[int] = field(default_factory=list)
    cloning_id: int = -1
    target_snapshot: int = -1
    snapshots: list[dict] = field(default_factory=list)
    template: dict = field(default_factory=dict)
    regtime: int = 0                    # registration time (0: one per id, as distinct images have)
    backup_increments: list[dict] = field(default_factory=list)    # ID, SOURCE, TYPE, PARENT_ID, SIZE
    backup_disk_ids: list[int] = field(default_factory=list)

    def element(self) -> etree._Element:
        root = _skeleton("oneimage-show-3.xml")
        _set(root, "ID", self.id)
        _set(root, "REGTIME", self.regtime or 1795616312 + self.id)
        _set(root, "NAME", self.name)
        _set(root, "TYPE", self.type)
        _set(root, "DISK_TYPE", 2)
        _set(root, "PERSISTENT", int(self.persistent))
        for key in ("SOURCE", "PATH", "FORMAT", "FS"):
            _set(root, key, getattr(self, key.lower()), cdata=True)
        _set(root, "SIZE", self.size)
        _set(root, "STATE", self.state)
        _set(root, "RUNNING_VMS", len(self.vms))
        _set(root, "CLONING_OPS", len(self.clones))
        _set(root, "CLONING_ID", self.cloning_id)
        _set(root, "TARGET_SNAPSHOT", self.target_snapshot)
        _set(root, "DATASTORE_ID", self.datastore_id)
        _set(root, "DATASTORE", self.datastore)
        for tag, ids in (("VMS", self.vms), ("CLONES", self.clones)):
            node = root.find(tag)
            node.clear()
            for i in ids:
                etree.SubElement(node, "ID").text = str(i)
        root.replace(root.find("TEMPLATE"), _template("TEMPLATE", {"DEV_PREFIX": "vd", **self.template}))
        root.replace(root.find("SNAPSHOTS"), _snapshots_el(None, self.snapshots))
        incs = root.find("BACKUP_INCREMENTS")
        for inc in self.backup_increments:
            el = etree.SubElement(incs, "INCREMENT")
            for key in ("DATE", "ID", "PARENT_ID", "SIZE", "SOURCE", "TYPE"):
                etree.SubElement(el, key).text = etree.CDATA(str(inc.get(key, {"DATE": 1796153222, "SIZE": 1,
                                                                              "PARENT_ID": -1}.get(key, ""))))
        ids = root.find("BACKUP_DISK_IDS")
        for i in self.backup_disk_ids:
            etree.SubElement(ids, "ID").text = str(i)
        return root


@dataclass
class Disk:
    disk_id: int
    datastore_id: int
    tm_mad: str = "linstor_un"
    datastore: str = "linstor_images"
    image_id: Optional[int] = None      # None: a volatile disk
    source: str = ""
    size: int = 1024                    # MB
    persistent: bool = False
    format: str = "raw"
    type: str = "BLOCK"                 # BLOCK, FILE, CDROM, fs, swap
    target: Optional[str] = None
    fs: str = ""
    snapshots: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def template(self) -> dict:
        t = {"DISK_ID": self.disk_id, "DATASTORE_ID": self.datastore_id, "DATASTORE": self.datastore,
             "TM_MAD": self.tm_mad, "SIZE": self.size, "FORMAT": self.format, "DRIVER": self.format,
             "TARGET": self.target or "vd" + "abcdefghijklmnop"[self.disk_id], "TYPE": self.type,
             "DISK_TYPE": "BLOCK" if self.type not in ("fs", "swap") else "FILE", "DEV_PREFIX": "vd",
             "CLUSTER_ID": 0, "ALLOW_ORPHANS": "NO", "PERSISTENT_SNAPSHOTS": "YES"}
        if self.image_id is not None:
            t.update({"IMAGE_ID": self.image_id, "IMAGE": f"image-{self.image_id}", "SOURCE": self.source,
                      "CLONE": "NO" if self.persistent else "YES", "SAVE": "YES" if self.persistent else "NO",
                      "READONLY": "YES" if self.type == "CDROM" else "NO", "LN_TARGET": "NONE",
                      "CLONE_TARGET": "SELF", "IMAGE_STATE": 8 if self.persistent else 2,
                      "ORIGINAL_SIZE": self.size})
            if self.persistent:
                t["PERSISTENT"] = "YES"
        if self.fs:
            t["FS"] = self.fs
        if self.snapshots:
            t["DISK_SNAPSHOT_TOTAL_SIZE"] = sum(s.get("size", 0) for s in self.snapshots)
        t.update(self.extra)
        return t


@dataclass
class History:
    hostname: str
    ds_id: int
    vm_mad: str = "kvm"
    tm_mad: str = "linstor_un"
    hid: int = 0
    action: int = 0


@dataclass
class VM:
    id: int
    name: str = ""
    state: str = "ACTIVE"
    lcm_state: str = "RUNNING"
    disks: list[Disk] = field(default_factory=list)
    history: list[History] = field(default_factory=list)   # oldest first; the last is the current one
    context: Optional[dict] = None
    template: dict = field(default_factory=dict)
    user_template: dict = field(default_factory=dict)
    deploy_id: str = ""
    stime: int = 0                      # creation time (0: one per id, as distinct VMs have)
    backup_config: dict = field(default_factory=dict)     # BACKUPS/BACKUP_CONFIG
    backup_ids: list[int] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)    # TEMPLATE/SNAPSHOT: system (VM) snapshots

    def new_snapshot(self, action: str = "CREATE") -> dict:
        """A VM snapshot as VirtualMachine::new_snapshot adds it (the next id, ACTIVE for the action)."""
        self._deactivate()
        snap_id = max((int(s["SNAPSHOT_ID"]) for s in self.snapshots), default=-1) + 1
        snap = {"SNAPSHOT_ID": snap_id, "NAME": f"snapshot-{snap_id}", "TIME": 1795617000 + snap_id,
                "HYPERVISOR_ID": "", "ACTIVE": "YES", "ACTION": action, "SYSTEM_DISK_SIZE": 64}
        self.snapshots.append(snap)
        return snap

    def activate_snapshot(self, snap_id: int, action: str) -> dict:
        """set_revert_snapshot / set_delete_snapshot: that snapshot ACTIVE with the action."""
        self._deactivate()
        found = next((s for s in self.snapshots if int(s["SNAPSHOT_ID"]) == snap_id), None)
        if found is None:
            return {}
        found.update(ACTIVE="YES", ACTION=action)
        return found

    def _deactivate(self) -> None:
        for snap in self.snapshots:
            snap.pop("ACTIVE", None)
            snap.pop("ACTION", None)

    def element(self) -> etree._Element:
        root = _skeleton("onevm-show-1.xml")
        _set(root, "ID", self.id)
        _set(root, "STIME", self.stime or 1795616326 + self.id)
        _set(root, "NAME", self.name or f"one-{self.id}")
        _set(root, "STATE", VM_STATES[self.state])
        _set(root, "LCM_STATE", LCM_STATES[self.lcm_state] if self.state == "ACTIVE" else 0)
        _set(root, "DEPLOY_ID", self.deploy_id or f"one-{self.id}")
        tmpl: dict = {"CPU": "0.1", "MEMORY": "64", "VMID": self.id, "TEMPLATE_ID": 0,
                      "DISK": [d.template() for d in self.disks], **self.template}
        if self.snapshots:
            tmpl["SNAPSHOT"] = [dict(s) for s in self.snapshots]
        if self.history:
            tmpl["TM_MAD_SYSTEM"] = self.history[-1].tm_mad
        if self.context is not None:
            tmpl["CONTEXT"] = self.context
        root.replace(root.find("TEMPLATE"), _template("TEMPLATE", tmpl))
        root.replace(root.find("USER_TEMPLATE"), _template("USER_TEMPLATE", self.user_template))
        records = root.find("HISTORY_RECORDS")
        sample = copy.deepcopy(records.find("HISTORY"))
        records.clear()
        for seq, h in enumerate(self.history):
            rec = copy.deepcopy(sample)
            for tag, value in (("OID", self.id), ("SEQ", seq), ("HOSTNAME", h.hostname), ("HID", h.hid),
                               ("DS_ID", h.ds_id), ("ACTION", h.action)):
                _set(rec, tag, value)
            _set(rec, "VM_MAD", h.vm_mad, cdata=True)
            _set(rec, "TM_MAD", h.tm_mad, cdata=True)
            records.append(rec)
        for old in root.findall("SNAPSHOTS"):
            root.remove(old)
        anchor = root.find("BACKUPS")
        for disk in self.disks:
            if disk.snapshots:
                anchor.addprevious(_snapshots_el(disk.disk_id, disk.snapshots))
        anchor.replace(anchor.find("BACKUP_CONFIG"), _template("BACKUP_CONFIG", self.backup_config))
        ids = anchor.find("BACKUP_IDS")
        for i in self.backup_ids:
            etree.SubElement(ids, "ID").text = str(i)
        return root


@dataclass
class Host:
    id: int
    name: str
    state: int = 2                      # MONITORED
    im_mad: str = "kvm"
    vm_mad: str = "kvm"
    vms: list[int] = field(default_factory=list)
    template: dict = field(default_factory=dict)

    def element(self) -> etree._Element:
        root = _skeleton("onehost-show-0.xml")
        _set(root, "ID", self.id)
        _set(root, "NAME", self.name)
        _set(root, "STATE", self.state)
        _set(root, "PREV_STATE", self.state)
        _set(root, "IM_MAD", self.im_mad, cdata=True)
        _set(root, "VM_MAD", self.vm_mad, cdata=True)
        vms = root.find("VMS")
        vms.clear()
        for vid in self.vms:
            etree.SubElement(vms, "ID").text = str(vid)
        root.replace(root.find("TEMPLATE"), _template("TEMPLATE", {"HOSTNAME": self.name, **self.template}))
        return root


def to_xml(el: etree._Element) -> str:
    return etree.tostring(el, encoding="unicode")


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)

    def log_message(self, fmt, *args) -> None:
        pass


ENCRYPTED_DATASTORE_ATTRS = ("RESTIC_PASSWORD",)      # oned.conf DATASTORE_ENCRYPTED_ATTR (6.10, 7.x)


def encrypted(value: str) -> str:
    """A stand-in of oned's encryption of an attribute (AES with its key, then base64): not the value."""
    return base64.b64encode(b"lab-encrypted:" + value.encode()).decode()


class OnedEndpoint:
    """The XML-RPC API at http://127.0.0.1:<port>/RPC2; objects are edited directly by tests."""

    def __init__(self, auth: str = "oneadmin:opennebula", version: str = "7.0.2", port: int = 0):
        self.auth = auth
        self.version = version
        self.vms: dict[int, VM] = {}
        self.datastores: dict[int, Datastore] = {}
        self.images: dict[int, Image] = {}
        self.hosts: dict[int, Host] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", port), requestHandler=_Handler, allow_none=False, logRequests=False)
        self.port = self.server.server_address[1]
        for name, fn in (("one.system.version", self._version), ("one.vm.info", self._vm),
                         ("one.datastore.info", self._datastore), ("one.image.info", self._image),
                         ("one.host.info", self._host), ("one.hostpool.info", self._hostpool)):
            self.server.register_function(self._wrap(name, fn), name)
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/RPC2"

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- object registry -------------------------------------------------------------------
    def add(self, obj) -> None:
        table = {VM: self.vms, Datastore: self.datastores, Image: self.images, Host: self.hosts}[type(obj)]
        with self.lock:
            table[obj.id] = obj

    def saving_as(self, disk_arg: str, source: str, snap: str, vm_id: str, ds_id: str) -> Callable[[], None]:
        """What oned's disk save-as does before it writes the CPDS line of a transfer: the new
        image registered (LOCKED, unless a test registered it itself) and the VM's disk flagged
        with it (VirtualMachineDisks::set_saveas_disk / set_saveas). Returns what oned does after
        the transfer (clear_saveas)."""
        vm = self.vms.get(int(vm_id)) if vm_id.isdigit() else None
        found = re.search(r"one-image-([0-9]+)/", source)
        disk_no = re.search(r"/disk\.([0-9]+)$", disk_arg)
        if vm is None or found is None or disk_no is None:
            return lambda: None
        image_id, disk_id = int(found.group(1)), int(disk_no.group(1))
        flags = {"HOTPLUG_SAVE_AS_ACTIVE": "YES", "HOTPLUG_SAVE_AS": str(image_id),
                 "HOTPLUG_SAVE_AS_SOURCE": source, "HOTPLUG_SAVE_AS_SNAPSHOT_ID": snap}
        with self.lock:
            if image_id not in self.images:
                self.images[image_id] = Image(image_id, f"saveas{image_id}", int(ds_id), source=source, state=4)
            disks = [d for d in vm.disks if d.disk_id == disk_id]
            for disk in disks:
                disk.extra.update(flags)

        def clear() -> None:
            with self.lock:
                for disk in disks:
                    for key in flags:
                        disk.extra.pop(key, None)
        return clear

    def host_by_name(self, name: str) -> Optional[Host]:
        return next((h for h in self.hosts.values() if h.name == name), None)

    def calls_of(self, method: str) -> list[tuple]:
        return [args for m, args in self.calls if m == method]

    # ---- XML-RPC methods -------------------------------------------------------------------
    def _wrap(self, name: str, fn):
        def call(session, *args):
            with self.lock:
                self.calls.append((name, args))
            if session != self.auth:
                return [False, f"[{name}] User couldn't be authenticated, aborting call.", AUTHENTICATION]
            return fn(name, *args)
        return call

    def _version(self, name: str):
        return [True, self.version, 0]

    def _info(self, name: str, table: dict, oid, kind: str):
        with self.lock:
            obj = table.get(int(oid))
            if obj is None:
                return [False, f"[{name}] Error getting {kind} [{oid}].", NO_EXISTS]
            return [True, to_xml(obj.element()), 0]

    def _vm(self, name: str, oid, decrypt: bool = False):
        return self._info(name, self.vms, oid, "virtual machine")

    def _datastore(self, name: str, oid, decrypt: bool = False):
        """As oned: the attributes DATASTORE_ENCRYPTED_ATTR names (RESTIC_PASSWORD, 6.10+) come
        encrypted unless the caller asks for them decrypted."""
        ok, xml, code = self._info(name, self.datastores, oid, "datastore")
        if not ok or decrypt:
            return [ok, xml, code]
        root = etree.fromstring(xml.encode())
        for attr in ENCRYPTED_DATASTORE_ATTRS:
            node = root.find(f"TEMPLATE/{attr}")
            if node is not None and node.text:
                node.text = etree.CDATA(encrypted(node.text))
        return [True, to_xml(root), 0]

    def _image(self, name: str, oid, decrypt: bool = False):
        return self._info(name, self.images, oid, "image")

    def _host(self, name: str, oid, decrypt: bool = False):
        return self._info(name, self.hosts, oid, "host")

    def _hostpool(self, name: str, *args):
        with self.lock:
            pool = etree.Element("HOST_POOL")
            for hid in sorted(self.hosts):
                pool.append(self.hosts[hid].element())
            return [True, to_xml(pool), 0]
