"""Every LINSTOR call of the driver, behind one client.

One connection per action, to the first controller of LS_CONTROLLERS that answers (a controller
that is down or hangs is skipped, unlike python-linstor's MultiLinstor, which does not fail over on
a timeout). TLS with client certificates and CA verification. Each reply list is checked: an error
becomes a DriverError naming the step, LINSTOR's message and its error report ids.
A request whose reply is lost (connection dropped, timeout) is retried once on a fresh connection
only where the call is idempotent or its effect can be checked first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import linstor
from linstor import sharedconsts as C

from . import deadline
from .errors import Deferred, DriverError, NotFound
from .report import Report
from .settings import Connection

THIN = {"LVM_THIN", "ZFS_THIN", "FILE_THIN", "STORAGE_SPACES_THIN"}
CONNECT_READS = 3                 # connecting is an https probe and a version request: 3 reads' time in all
UNMARKED_CLONES = "LINSTOR before 1.32 cannot mark a clone as it makes it"
# CtrlSnapshotRollbackApiCallHandler: from 1.31.0 a rollback deletes every resource and restores the
# snapshot (any snapshot, not only the newest), merging the snapshot's copy of the definition's
# properties back; 1.31.0/1.31.1 refuse it when a diskful node lacks the snapshot and do not make
# the diskless resources again (1.31.2 does); 1.31.3 resets the volume's size to the snapshot's
ROLLBACK_BY_RESTORE = (1, 31, 0)
ROLLBACK_ANY_NODES = (1, 31, 2)
# properties LINSTOR keeps itself (auto-quorum; internal marks): never written back by the driver
LINSTOR_MANAGED = ("DrbdOptions/Resource/quorum", "DrbdOptions/Resource/on-no-quorum", "Internal/",
                   "DrbdPrimarySetOn", "Cloned")


def _managed(key: str) -> bool:
    return key.startswith(LINSTOR_MANAGED)


@dataclass
class Replica:
    resource: str
    node: str
    flags: list[str]
    props: dict
    in_use: bool
    device: Optional[str]          # the path to use on that node
    provider: str
    pool: str
    allocated_kib: int
    usable_kib: Optional[int] = None    # what the device offers (None: LINSTOR did not say)
    layers: tuple = ()                  # the volume's layers, top first (DRBD, LUKS, STORAGE...)

    @property
    def diskless(self) -> bool:
        return "DISKLESS" in self.flags

    @property
    def tiebreaker(self) -> bool:
        return "TIE_BREAKER" in self.flags

    @property
    def deleting(self) -> bool:
        return "DELETE" in self.flags

    @property
    def usable(self) -> bool:
        """A replica a host can use now (not a tie-breaker, not being deleted)."""
        return not self.tiebreaker and not self.deleting


@dataclass
class ResourceDef:
    name: str
    props: dict
    resource_group: str
    size_kib: int
    deleting: bool = False          # LINSTOR deletes it when its offline nodes are back; the name is taken


@dataclass
class Snapshot:
    name: str
    nodes: list[str]
    created_ms: int
    size_kib: int
    props: dict = field(default_factory=dict)


@dataclass
class StoragePool:
    node: str
    name: str
    provider: str
    total_kib: Optional[int]            # None: LINSTOR does not know (yet)
    free_kib: int
    props: dict = field(default_factory=dict)

    @property
    def diskless(self) -> bool:
        return self.provider == "DISKLESS"


@dataclass
class ResourceGroup:
    name: str
    pools: list[str]                    # its select filter's storage pools
    place_count: Optional[int]


def thin_only(replicas: list[Replica]) -> bool:
    """Every disk of a volume in a thin pool: a new one reads zeros, so a copy may skip them."""
    return all(r.provider in THIN for r in replicas if not r.diskless)


def natural_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def device_of(rsc: str, volume: dict) -> Optional[str]:
    """The device a host opens: DRBD's stable udev path when DRBD is on top, else what LINSTOR reports."""
    layers = [entry.get("type") for entry in volume.get("layer_data_list", [])]
    if layers and layers[0] == "DRBD":
        return f"/dev/drbd/by-res/{rsc}/{volume.get('volume_number', 0)}"
    return volume.get("device_path") or None


def _not_connected(replies) -> list[str]:
    """Nodes a change waits for (WARN_NOT_CONNECTED: LINSTOR applies it when they connect)."""
    out = set()
    for r in replies or []:
        if isinstance(r, linstor.ApiCallResponse) and r.is_warning() and \
                (r.ret_code & C.MASK_BITS_CODE) == (C.WARN_NOT_CONNECTED & C.MASK_BITS_CODE):
            quoted = r.message.split("'")      # "No active connection to satellite 'node'"
            out.add((r.object_refs or {}).get("Node") or (quoted[1] if len(quoted) > 2 else "?"))
    return sorted(out)


def _offline_refusal(replies) -> Optional[str]:
    """LINSTOR refused because a node is not connected (FAIL_NOT_CONNECTED): why, or None."""
    for r in _errors(replies):
        if (r.ret_code & C.MASK_BITS_CODE) == (C.FAIL_NOT_CONNECTED & C.MASK_BITS_CODE):
            return f"{r.message.rstrip('.')} (LINSTOR rolls back only with every node of the volume online)"
    return None


def _which(nodes) -> str:
    nodes = sorted(nodes)
    return f"{'nodes' if len(nodes) > 1 else 'node'} {', '.join(nodes)} {'are' if len(nodes) > 1 else 'is'}"


def _errors(replies) -> list:
    return [r for r in replies if isinstance(r, linstor.ApiCallResponse) and r.is_error()]


def describe(replies) -> str:
    parts = []
    for r in _errors(replies):
        text = r.message.rstrip(".")
        if r.cause:
            text += f" ({r.cause.rstrip('.')})"
        if r.error_report_ids:
            text += f" [LINSTOR error report {', '.join(r.error_report_ids)}]"
        parts.append(text)
    return "; ".join(parts)



def _with_create_props(client: linstor.Linstor, props: dict, fn: Callable[[linstor.Linstor], object]):
    """Run `fn` with `props` added to the resource definition its POST creates. LINSTOR's REST API
    takes them (ResourceDefinitionCreate.resource_definition.props, ResourceGroupSpawn.
    resource_definition_props); python-linstor builds those bodies without a parameter for them,
    so its request method is wrapped for this one call."""
    send = client._rest_request

    def with_props(apicall, method, path, body=None, *args, **kwargs):
        if method == "POST" and isinstance(body, dict):
            if isinstance(body.get("resource_definition"), dict):
                body["resource_definition"].setdefault("props", {}).update(props)
            elif "resource_definition_name" in body:
                body.setdefault("resource_definition_props", {}).update(props)
        return send(apicall, method, path, body, *args, **kwargs)
    client._rest_request = with_props
    try:
        return fn(client)
    finally:
        del client._rest_request


class Linstor:
    def __init__(self, connection: Connection, report: Report, timeout: float = 300,
                 connect_timeout: float = 10):
        self.connection = connection
        self.report = report
        # LINSTOR answers a change only once the satellites applied it: requests may take long,
        # but a controller that does not even answer its version within seconds is skipped
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client: Optional[linstor.Linstor] = None
        self.requests = 0

    # ---- connection ------------------------------------------------------------------------------
    def _connect(self) -> linstor.Linstor:
        problems = []
        for uri in linstor.MultiLinstor.controller_uri_list(",".join(self.connection.controllers)):
            client = linstor.Linstor(uri, timeout=self.connect_timeout, agent_info="linstor_un")
            if self.connection.certfile:
                client.certfile = self.connection.certfile
                client.keyfile = self.connection.keyfile
            if self.connection.cafile:
                client.cafile = self.connection.cafile
            try:
                # python-linstor's connect (an https probe, then the version request) times out per
                # read only: a controller that trickles its answers would hold the action forever
                try:
                    deadline.within(CONNECT_READS * self.connect_timeout, f"connect to {uri}", client.connect)
                except deadline.Expired:
                    deadline.cut(getattr(getattr(client, "_rest_conn", None), "sock", None))
                    problems.append(f"{uri}: no complete answer within {CONNECT_READS * self.connect_timeout:.0f}s")
                    continue
                client._timeout = self.timeout            # from now on: the long request timeout
                conn = getattr(client, "_rest_conn", None)
                if conn is not None:
                    conn.timeout = self.timeout
                    if getattr(conn, "sock", None) is not None:
                        conn.sock.settimeout(self.timeout)
                return client
            except (linstor.LinstorNetworkError, linstor.LinstorTimeoutError, OSError) as err:
                problems.append(f"{uri}: {err}")
            except linstor.LinstorError as err:
                problems.append(f"{uri}: {err}")
        raise DriverError("cannot reach any LINSTOR controller (" + "; ".join(problems) + ")")

    def _reconnect(self, step: str, wait: float = 30) -> None:
        """After a lost connection mid-action: a controller that restarts (or fails over) is
        waited for, up to `wait` seconds, so the action can finish or undo what it did."""
        import time
        self.close()
        deadline = time.monotonic() + wait
        while True:
            try:
                self._client = self._connect()
                return
            except DriverError as err:
                if time.monotonic() > deadline:
                    raise DriverError(f"{step}: lost the controller and none came back within {wait:.0f}s ({err})")
                time.sleep(1)

    @property
    def client(self) -> linstor.Linstor:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:
                pass
            self._client = None

    def _call(self, step: str, fn: Callable[[linstor.Linstor], object],
              done: Optional[Callable[[], bool]] = None, retry: bool = True):
        """Run one request. On a lost reply: reconnect, and if `done()` says it took effect, carry on."""
        self.requests += 1
        try:
            return self._within_deadline(step, fn)
        except (linstor.LinstorNetworkError, linstor.LinstorTimeoutError) as err:
            self.report.info(f"{step}: lost the controller's reply ({err}); checking again")
            self._reconnect(step)
            if done is not None and done():
                return []
            if not retry:
                raise DriverError(f"{step}: no reply from LINSTOR ({err})")
            self.requests += 1
            try:
                return self._within_deadline(step, fn)
            except (linstor.LinstorNetworkError, linstor.LinstorTimeoutError) as err2:
                raise DriverError(f"{step}: no reply from LINSTOR ({err2})")
        except linstor.LinstorError as err:
            raise DriverError(f"{step}: {err}")

    def _within_deadline(self, step: str, fn: Callable[[linstor.Linstor], object]):
        """One request with an overall deadline (`timeout`), not only python-linstor's per-read
        one: a controller that trickles its answer cannot hold the action. On the deadline the
        connection is cut (which wakes the blocked read) and dropped."""
        client = self.client
        try:
            return deadline.within(self.timeout, f"linstor {step}", lambda: fn(client))
        except deadline.Expired:
            deadline.cut(getattr(getattr(client, "_rest_conn", None), "sock", None))
            self._client = None
            raise DriverError(f"{step}: no complete answer from LINSTOR within {self.timeout:.0f}s")

    def _check(self, step: str, replies, ok_codes: tuple[int, ...] = ()):
        errors = [r for r in _errors(replies)
                  if (r.ret_code & C.MASK_BITS_CODE) not in {c & C.MASK_BITS_CODE for c in ok_codes}]
        if errors:
            # FAIL_NOT_FOUND_* (300-399): the object asked for does not exist; callers may say what it is
            missing = all(300 <= (e.ret_code & C.MASK_BITS_CODE) < 400 for e in errors)
            raise (NotFound if missing else DriverError)(f"{step}: {describe(errors)}")
        return replies

    def do(self, step: str, fn: Callable[[linstor.Linstor], object], ok_codes: tuple[int, ...] = (),
           done: Optional[Callable[[], bool]] = None, create_props: Optional[dict] = None):
        """One request; `create_props`: properties the resource definition it creates is born
        with (ownership marks: there is no moment when it exists unmarked)."""
        if create_props:
            plain = fn
            fn = lambda c: _with_create_props(c, create_props, plain)     # noqa: E731
        return self._check(step, self._call(step, fn, done), ok_codes)

    # ---- reads -----------------------------------------------------------------------------------
    def server_version(self) -> tuple[int, ...]:
        v = getattr(self.client, "_ctrl_version", None)
        if v is None:
            return (0, 0, 0)
        try:
            return tuple(int(x) for x in v.version.split("-")[0].split(".")[:3])
        except (AttributeError, ValueError):
            return (0, 0, 0)

    def resource_definitions(self, names: Optional[list[str]] = None, props: Optional[list[str]] = None,
                             sizes: bool = True) -> list[ResourceDef]:
        """sizes=False: without volume definitions (size_kib 0), a lighter answer for many definitions."""
        reply = self._call("list resource definitions", lambda c: c.resource_dfn_list_raise(
            query_volume_definitions=sizes, filter_by_resource_definitions=names, filter_by_props=props))
        out = []
        for rd in reply.resource_definitions:
            data = rd.data_v1
            vds = data.get("volume_definitions") or []
            size = next((v.get("size_kib", 0) for v in vds if v.get("volume_number", 0) == 0), 0)
            out.append(ResourceDef(data["name"], data.get("props", {}), data.get("resource_group_name", ""), size,
                                   "DELETE" in (data.get("flags") or [])))
        return out

    def definitions(self, *names: str) -> dict[str, Optional[ResourceDef]]:
        """The named definitions in one request: name -> ResourceDef, or None if it does not exist."""
        found = {rd.name.lower(): rd for rd in self.resource_definitions(list(names))}
        return {n: found.get(n.lower()) for n in names}

    def resource_definition(self, name: str) -> Optional[ResourceDef]:
        return self.definitions(name)[name]

    def replicas(self, name: str) -> list[Replica]:
        reply = self._call(f"list resources of {name}",
                           lambda c: c.resource_list_raise(filter_by_resources=[name]))
        return self._replicas(reply.resources)

    def replicas_of(self, names: list[str]) -> dict[str, list[Replica]]:
        """Replicas of many resources in one request: by name for a few (short URL), else all of
        them, filtered here (the request count must not grow with the number of resources)."""
        wanted = {n.lower() for n in names}
        out: dict[str, list[Replica]] = {n: [] for n in names}
        filt = names if len(names) <= 100 else None
        reply = self._call("list resources", lambda c: c.resource_list_raise(filter_by_resources=filt))
        mine = [r for r in reply.resources if r.name.lower() in wanted]
        for replica_set in self._replicas(mine):
            out.setdefault(replica_set.resource, []).append(replica_set)
        return out

    @staticmethod
    def _replicas(resources) -> list[Replica]:
        # in use: the resource's own state (python-linstor's resource_states would rebuild every
        # volume's state for all of them: 0.4 s at 20,000 resources)
        out = []
        for r in resources:
            data = r.data_v1
            vols = data.get("volumes") or [{}]
            vol0 = next((v for v in vols if v.get("volume_number", 0) == 0), vols[0])
            out.append(Replica(resource=data["name"], node=data["node_name"], flags=data.get("flags", []),
                               props=data.get("props", {}),
                               in_use=bool((data.get("state") or {}).get("in_use")),
                               device=device_of(data["name"], vol0), provider=vol0.get("provider_kind", ""),
                               pool=vol0.get("storage_pool_name", ""),
                               allocated_kib=int(vol0.get("allocated_size_kib") or 0),
                               usable_kib=natural_int(vol0.get("usable_size_kib")),
                               layers=tuple(e.get("type", "") for e in vol0.get("layer_data_list") or [])))
        return out

    def snapshots(self, name: str) -> list[Snapshot]:
        return self.snapshots_of([name])[name]

    def snapshots_of(self, names: list[str]) -> dict[str, list[Snapshot]]:
        """The snapshots of each named resource, in one request (the callers name a VM's few disks)."""
        reply = self._call(f"list snapshots of {', '.join(names)}",
                           lambda c: c.snapshot_dfn_list_raise(filter_by_resources=list(names)))
        out: dict[str, list[Snapshot]] = {n: [] for n in names}
        named = {n.lower(): n for n in names}
        for s in reply.snapshots:
            data = s.data_v1
            resource = named.get(str(data.get("resource_name", "")).lower())
            if resource is None:
                continue
            created = max([n.get("create_timestamp", 0) for n in data.get("snapshots", [])] or [0])
            size = next((v.get("size_kib", 0) for v in data.get("volume_definitions", [])), 0)
            # REST 1.24+ splits them: the snapshot's own and the copy of the definition's at the
            # time it was taken (ownership tokens, owner properties); older servers: `props`
            props = {**(data.get("props") or {}), **(data.get("resource_definition_props") or {}),
                     **(data.get("snapshot_definition_props") or {})}
            out[resource].append(Snapshot(data["name"], data.get("nodes", []), created, size, props))
        return out

    def storage_pools(self, pools: Optional[list[str]] = None,
                      nodes: Optional[list[str]] = None) -> list[StoragePool]:
        reply = self._call("list storage pools", lambda c: c.storage_pool_list_raise(
            filter_by_nodes=nodes, filter_by_stor_pools=pools))
        out = []
        for p in (x.data_v1 for x in reply.storage_pools):
            total = p.get("total_capacity")
            out.append(StoragePool(p.get("node_name", ""), p.get("storage_pool_name", ""), p.get("provider_kind", ""),
                                   int(total) if total is not None else None, int(p.get("free_capacity") or 0),
                                   dict(p.get("props") or {})))
        return out

    def resource_group(self, name: str) -> ResourceGroup:
        reply = self._call(f"read resource group {name}",
                           lambda c: c.resource_group_list_raise(filter_by_resource_groups=[name]))
        groups = [g.data_v1 for g in reply.resource_groups if g.data_v1.get("name", "").lower() == name.lower()]
        if not groups:
            raise DriverError(f"resource group '{name}' does not exist in LINSTOR")
        sf = groups[0].get("select_filter") or {}
        pools = sf.get("storage_pool_list") or ([sf["storage_pool"]] if sf.get("storage_pool") else [])
        return ResourceGroup(groups[0]["name"], list(pools), sf.get("place_count"))

    def offline_nodes(self, nodes: list[str]) -> list[str]:
        """Those of `nodes` whose satellite LINSTOR does not have online."""
        if not nodes:
            return []
        reply = self._call("list nodes", lambda c: c.node_list_raise(filter_by_nodes=sorted(set(nodes))))
        return sorted(n.name for n in reply.nodes if (n.connection_status or "").upper() != "ONLINE")

    def node_names(self) -> set[str]:
        reply = self._call("list nodes", lambda c: c.node_list_raise())
        return {n.name for n in reply.nodes}

    # ---- writes ----------------------------------------------------------------------------------
    # each create says how to tell, after a lost reply, that the controller did apply it
    def define(self, name: str, size_kib: int, resource_group: Optional[str] = None,
               layer_list: Optional[list[str]] = None, encrypt: bool = False, props: Optional[dict] = None) -> None:
        """A new resource definition (born with `props`) and its one volume."""
        self.do(f"create resource {name}", lambda c: c.resource_dfn_create(
            name, resource_group=resource_group, layer_list=layer_list or None),
            done=lambda: self._born(name, props), create_props=props)
        self.do(f"create volume of {name}", lambda c: c.volume_dfn_create(name, size_kib, encrypt=encrypt),
                done=lambda: self._sized(name))

    @property
    def spawn_takes_props(self) -> bool:
        """LINSTOR reads resource-definition properties in a spawn request from 1.27 (REST 1.22:
        ResourceGroupSpawn.resource_definition_props); an older one refuses the whole request."""
        return not self.client.api_version_smaller("1.22.0")

    def spawn(self, resource_group: str, name: str, size_kib: int, count: Optional[int], filters: dict,
              props: Optional[dict] = None) -> None:
        """A new resource from its group, placed in one request."""
        self.do(f"create resource {name} in group {resource_group}", lambda c: c.resource_group_spawn(
            resource_group, name, [size_kib], partial=True, place_count=count, **filters),
            done=lambda: self._born(name, props) and self._sized(name) and self._placed(name), create_props=props)

    def place(self, name: str, replicas: list[tuple[str, str]], layer_list: Optional[list[str]] = None,
              required: bool = True) -> bool:
        """Diskful replicas of `name` on (node, storage pool)s. Not `required`: a refusal is no
        error (False), and nothing is retried."""
        data = [linstor.ResourceData(node, name, storage_pool=pool, layer_list=layer_list or None)
                for node, pool in replicas]
        step = f"place {name} on {' '.join(node for node, _ in replicas)}"
        if not required:
            return linstor.Linstor.all_api_responses_no_error(self._call(step, lambda c: c.resource_create(data)))
        self.do(step, lambda c: c.resource_create(data), done=lambda: self._placed(name, [n for n, _ in replicas]))
        return True

    def autoplace(self, name: str, count: Optional[int], filters: dict) -> None:
        """LINSTOR's autoplacer: `count` diskful replicas of `name` (what is there counts)."""
        self.do(f"place {name}", lambda c: c.resource_auto_place(name, count, **filters),
                ok_codes=(C.WARN_RSC_ALREADY_DEPLOYED,))

    def _born(self, name: str, props: Optional[dict]) -> bool:
        """`name` exists with the properties this request gave it: made by this request, not a
        definition of the name someone else made meanwhile (after a lost reply)."""
        rd = self.resource_definition(name)
        return rd is not None and all(rd.props.get(k) == v for k, v in (props or {}).items())

    def _sized(self, name: str) -> bool:
        rd = self.resource_definition(name)
        return rd is not None and rd.size_kib > 0

    def _placed(self, name: str, nodes: Optional[list[str]] = None) -> bool:
        have = {r.node.lower() for r in self.replicas(name) if not r.diskless}
        return bool(have) and all(n.lower() in have for n in nodes or [])

    def delete_definition(self, name: str, snapshots: Optional[list[Snapshot]] = None, patience: float = 0,
                          reuse: bool = False) -> None:
        """Delete a resource definition with its snapshots (listed here unless the caller just
        did); a missing one is fine. With `patience`, refusals (a device still in use) are retried
        for that many seconds. With a node of it offline LINSTOR only marks it and finishes when
        the node is back, the name taken meanwhile: said in the log, and an error where the caller
        is about to make the name again (`reuse`)."""
        import time
        until = time.monotonic() + patience
        attempt = 0
        while True:                    # a cleanup must not give up on one transient refusal
            attempt += 1
            try:
                waiting: set[str] = set()
                for snap in (snapshots if snapshots is not None and attempt == 1 else self.snapshots(name)):
                    waiting.update(self.delete_snapshot(name, snap.name))
                if waiting:
                    # a definition with snapshots, even ones being deleted, cannot be deleted
                    raise Deferred(f"delete {name}: LINSTOR deletes its snapshots only when {_which(waiting)} back "
                                   f"online, and {name} only after them: {name} stays until then. Retry when the "
                                   f"node is back (or 'linstor node lost' it)")
                replies = self.do(f"delete resource {name}", lambda c: c.resource_dfn_delete(name),
                                  done=lambda: self.resource_definition(name) is None)
                waiting.update(_not_connected(replies))
                if waiting:
                    self.deferred(name, sorted(waiting), reuse)
                return
            except Deferred:
                raise
            except DriverError as err:
                if attempt >= 2 and time.monotonic() >= until:
                    raise
                self.report.info(f"{err}; trying once more")
                if attempt >= 2:
                    time.sleep(1)

    def set_props(self, name: str, props: dict, delete: Optional[list[str]] = None) -> None:
        delete = list(delete or [])
        self.do(f"set properties of {name}", lambda c: c.resource_dfn_modify(name, props, delete_props=delete))

    def set_replica_props(self, node: str, name: str, props: dict, delete: Optional[list[str]] = None) -> None:
        self.do(f"set properties of {name} on {node}",
                lambda c: c.resource_modify(node, name, props, delete_props=list(delete or [])))

    def unmark_replica(self, node: str, name: str, prop: str) -> None:
        self._twice(f"clear {prop} of {name} on {node}",
                    lambda c: c.resource_modify(node, name, {}, delete_props=[prop]))

    def make_available(self, node: str, name: str, diskful: bool = False) -> None:
        self.do(f"attach {name} on {node}", lambda c: c.resource_make_available(node, name, diskful=diskful))

    def deferred(self, name: str, nodes: list[str], reuse: bool = False) -> None:
        """A deletion LINSTOR finishes when `nodes` are back online."""
        if reuse:
            raise Deferred(f"{name} is being deleted by LINSTOR, which finishes only when {_which(nodes)} back "
                           f"online, and keeps the name until then: it cannot be made again now. Retry when the node "
                           f"is back (or 'linstor node lost' it)")
        self.report.info(f"{name}: LINSTOR finishes deleting it when {_which(nodes)} back online")

    def being_deleted(self, rd: ResourceDef) -> None:
        """An error for an action that would reuse or make again `rd`, which LINSTOR is deleting."""
        nodes = self.offline_nodes([r.node for r in self.replicas(rd.name)]) or ["its offline nodes"]
        self.deferred(rd.name, nodes, reuse=True)

    def _twice(self, step: str, fn) -> list:
        """An idempotent delete: one refusal is retried before the action gives up."""
        try:
            return self.do(step, fn)
        except DriverError as err:
            self.report.info(f"{err}; trying once more")
            return self.do(step, fn)

    def delete_replica(self, node: str, name: str) -> None:
        self._twice(f"detach {name} from {node}", lambda c: c.resource_delete(node, name))

    def create_snapshot(self, name: str, snap: str, exist_ok: bool = False) -> bool:
        """True if this call created it; with exist_ok an existing snapshot (a re-run) is no
        error: asking LINSTOR directly saves listing the snapshots first."""
        replies = self.do(f"snapshot {name} as {snap}", lambda c: c.snapshot_create(None, name, snap),
                          ok_codes=(C.FAIL_EXISTS_SNAPSHOT_DFN,) if exist_ok else (),
                          done=lambda: any(s.name == snap for s in self.snapshots(name)))
        return not _errors(replies)

    def delete_snapshot(self, name: str, snap: str) -> list[str]:
        """The nodes LINSTOR waits for to finish the deletion (it keeps the name until then)."""
        replies = self._twice(f"delete snapshot {snap} of {name}", lambda c: c.snapshot_delete(name, snap))
        waiting = _not_connected(replies)
        if waiting:
            self.deferred(f"snapshot {snap} of {name}", waiting)
        return waiting

    def rollback_refusal(self, snap: Snapshot, newest: bool, replicas: list[Replica]) -> Optional[str]:
        """Why LINSTOR would refuse to roll back to `snap` (None: it may): only the newest snapshot
        before 1.31.0, only when every diskful node holds it before 1.31.2. (A node offline is
        refused at every release: `rollback` says so, with nothing changed.)"""
        version = self.server_version()
        if not newest and version < ROLLBACK_BY_RESTORE:
            return f"{snap.name} is not the newest snapshot (LINSTOR before 1.31 rolls back only to that)"
        holders = {n.lower() for n in snap.nodes}
        lacking = sorted(r.node for r in replicas if not r.diskless and r.usable and r.node.lower() not in holders)
        if lacking and version < ROLLBACK_ANY_NODES:
            return f"{', '.join(lacking)} hold no copy of {snap.name} (LINSTOR before 1.31.2 needs one on every disk)"
        return None

    def rollback(self, name: str, snap: str, keep_size: bool = True,
                 replicas: Optional[list[Replica]] = None) -> Optional[str]:
        """`name` holds `snap`'s data again, and nothing else changes. Returns why LINSTOR refused
        with nothing changed (a node of the volume offline: ensureAllSatellitesConnected at every
        release), None when rolled back.

        From LINSTOR 1.31 a rollback is a delete and a restore (ROLLBACK_BY_RESTORE): afterwards the
        definition's properties are put back as they were (the restore merges the snapshot's copy
        of them in: stale tokens, owner properties, sizes), the diskless replicas (`replicas`: the
        listing before, read here if not given) are attached again where 1.31.0/1.31.1 did not
        make them again (a VM host's: its disk link would dangle), and with `keep_size` the volume
        grows back to its size where 1.31.3 reset it to the snapshot's. Done also when the rollback
        fails (1.31.0-1.31.2 restore the state before it, without the diskless replicas)."""
        step = f"roll {name} back to {snap}"
        if self.server_version() < ROLLBACK_BY_RESTORE:
            return _offline_refusal(self.do(step, lambda c: c.snapshot_rollback(name, snap),
                                            ok_codes=(C.FAIL_NOT_CONNECTED,)))
        before = self.resource_definition(name)
        if replicas is None:
            replicas = self.replicas(name)
        refused: Optional[str] = None
        try:
            refused = _offline_refusal(self.do(step, lambda c: c.snapshot_rollback(name, snap),
                                               ok_codes=(C.FAIL_NOT_CONNECTED,)))
        except DriverError:
            if before is not None:
                self._after_rollback(name, before, replicas, keep_size, failed=True)
            raise
        if refused is None and before is not None:
            self._after_rollback(name, before, replicas, keep_size)
        return refused

    def _after_rollback(self, name: str, before: ResourceDef, replicas: list[Replica], keep_size: bool,
                        failed: bool = False) -> None:
        after = self.resource_definition(name)
        if after is None:
            return
        changed = {k: v for k, v in before.props.items() if after.props.get(k) != v and not _managed(k)}
        added = [k for k in after.props if k not in before.props and not _managed(k)]
        if changed or added:
            self.set_props(name, changed, delete=added)
        if failed or self.server_version() < ROLLBACK_ANY_NODES:    # diskless replicas not made again
            now = {r.node.lower(): r for r in self.replicas(name)}
            for r in replicas:
                if r.diskless and r.usable and (r.node.lower() not in now or not now[r.node.lower()].usable):
                    self.report.info(f"attaching {name} on {r.node} again (LINSTOR's rollback removed it)")
                    self.make_available(r.node, name)
        if keep_size and after.size_kib < before.size_kib:
            self.report.info(f"{name} back to {before.size_kib} KiB (LINSTOR's rollback gave it its snapshot's size)")
            self.resize(name, before.size_kib)

    def resize(self, name: str, size_kib: int) -> None:
        self.do(f"resize {name}", lambda c: c.volume_dfn_modify(name, 0, size=size_kib),
                ok_codes=(C.WARN_VLMDFN_RESIZE_SAME_SIZE,))

    def clone(self, src: str, dst: str, resource_group: Optional[str], delete_props: list[str],
              timeout: float = 3600, props: Optional[dict] = None) -> None:
        """LINSTOR's own copy of a resource definition (and its data), waited for; `props` are set
        on the copy (with the request from REST 1.26 on, right after it before), and so is
        `resource_group` (REST 1.24 on: LINSTOR 1.30; python-linstor sends it from 1.23, which
        LINSTOR 1.28 and 1.29 report without reading it)."""
        import time
        step = f"clone {src} to {dst}"
        late = self.clone_refusal is not None                # no delete_props / override_props yet
        late_group = self.client.api_version_smaller("1.24.0")
        delete_props = [k for k in delete_props if k not in (props or {})]
        # a lost reply is not sent again: the status request below says whether the clone started
        started = self._call(step, lambda c: c.resource_dfn_clone(
            src, dst, resource_group=None if late_group else resource_group,
            delete_props=None if late else (delete_props or None), property_dict=None if late else (props or None)),
            done=lambda: self._born(dst, None if late else props), retry=False)
        # python-linstor reads this reply without looking at the HTTP status: an error list comes
        # back wrapped as if it were a CloneStarted
        data = getattr(started, "data_v1", None)
        items = data if isinstance(data, list) else [data]
        if started is None or any(isinstance(x, dict) and "ret_code" in x for x in items):
            self._check(step, [linstor.ApiCallResponse(x) for x in items if isinstance(x, dict)])
            raise DriverError(f"{step}: LINSTOR did not start the clone")
        self._check(step, list(getattr(started, "messages", []) or []))
        deadline = time.monotonic() + timeout
        while True:
            status = self._call(step, lambda c: c.resource_dfn_clone_status(src, dst))
            if isinstance(status, list):
                self._check(step, status)
                raise DriverError(f"{step}: no clone status")
            state = getattr(status.status, "value", status.status)
            if state == "COMPLETE":
                if late and (delete_props or props):
                    self.set_props(dst, dict(props or {}), delete=delete_props)
                if late_group and resource_group:
                    self.do(f"put {dst} into resource group {resource_group}",
                            lambda c: c.resource_dfn_modify(dst, {}, resource_group=resource_group))
                return
            if state == "FAILED" or time.monotonic() > deadline:
                raise DriverError(f"{step}: LINSTOR reports {state}")
            time.sleep(0.5)

    @property
    def clone_refusal(self) -> Optional[str]:
        """Why the driver does not let LINSTOR clone here; None where it may. LINSTOR sets a clone's
        properties in the clone request itself from REST 1.26 (LINSTOR 1.32); before, a clone
        exists unmarked until the properties follow it, and an action killed in between leaves a
        volume nobody can prove is its own. (From 1.31.0 LINSTOR refuses a clone while a disk of
        the source is offline, making nothing - FAIL_NOT_ALL_UPTODATE: the callers copy instead.)"""
        return UNMARKED_CLONES if self.client.api_version_smaller("1.26.0") else None

    def copy_definition(self, source: ResourceDef, dst: str, resource_group: Optional[str], size_kib: int,
                        props: dict) -> None:
        """`dst`: LINSTOR's clone of `source`, data included, without its OpenNebula properties (the
        owner's marks and snapshot tokens stay with the source), grown to `size_kib` if larger."""
        self.clone(source.name, dst, resource_group or source.resource_group or None,
                   [k for k in source.props if k.startswith("Aux/one/")], props=props)
        # LINSTOR's clone copies every resource of the source with its properties: the source's
        # attachments (diskless, on its hosts) are not the copy's, nor are its replicas' marks
        for r in self.replicas(dst):
            if r.diskless and not r.tiebreaker:
                self.delete_replica(r.node, dst)
            elif any(k.startswith("Aux/one/") for k in r.props):
                self.set_replica_props(r.node, dst, {}, delete=[k for k in r.props if k.startswith("Aux/one/")])
        if size_kib > source.size_kib:
            self.resize(dst, size_kib)

    def create_snapshots(self, names: list[str], snap: str) -> None:
        """`snap` of every resource in one request: LINSTOR suspends I/O on all of them, takes the
        snapshots and resumes, so they hold one instant (REST 1.18+; before, one by one)."""
        if len(names) == 1 or self.client.api_version_smaller("1.18.0"):
            for name in names:
                self.create_snapshot(name, snap)
            return
        self.do(f"snapshot {', '.join(names)} as {snap} (one request)",
                lambda c: c.snapshot_create_multi(None, names, snap),
                done=lambda: all(any(s.name == snap for s in self.snapshots(n)) for n in names))

    def restore_snapshot(self, src: str, snap: str, dst: str, resource_group: Optional[str],
                         layer_list: Optional[list[str]] = None, props: Optional[dict] = None,
                         nodes: Optional[list[str]] = None) -> None:
        """A new resource `dst` holding `src`'s snapshot: definition, volumes, then replicas (on
        `nodes` only if given; else wherever the snapshot is)."""
        self.do(f"create {dst}", lambda c: c.resource_dfn_create(dst, resource_group=resource_group,
                                                                 layer_list=layer_list or None),
                done=lambda: self._born(dst, props), create_props=props)
        self.do(f"restore volumes of {src}/{snap} into {dst}",
                lambda c: c.snapshot_volume_definition_restore(src, snap, dst))
        self.do(f"restore {src}/{snap} into {dst}",
                lambda c: c.snapshot_resource_restore(list(nodes or []), src, snap, dst))
        # the restore copies the snapshot's copy of the source's properties over the new
        # definition's: it keeps exactly the OpenNebula marks it was born with
        restored = self.resource_definition(dst)
        if props is not None and restored is not None:
            stale = [k for k in restored.props if k.startswith("Aux/one/") and k not in props]
            changed = {k: v for k, v in props.items() if restored.props.get(k) != v}
            if stale or changed:
                self.set_props(dst, changed, delete=stale)
