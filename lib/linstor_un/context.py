"""One datastore as one argument: its settings, LINSTOR session, attacher and report, and the two
things every operation on its volumes does the same way — make a new volume (`new_volume`) and
copy a volume's bytes through a host (`copy`).

    ds = act.datastore(ds_id)                 # or act.context(settings)
    with ds.new_volume(res, owner, "mkimage") as new:
        scheduler(ds.api, ds.settings.placement, ds.report).create(res, size_kib, props=new.props)
        ds.copy(host, src_res, res, sparse=True)
        new.complete()
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, Union

from .report import Report

if TYPE_CHECKING:                       # python-linstor is imported only by actions that use LINSTOR
    from .attach import Attacher
    from .linstor_api import Linstor, Replica
    from .ownership import NewVolume, Owner
    from .remote import Host
    from .settings import DatastoreSettings


@dataclass(frozen=True)
class OnHost:
    """A device the copying host has already (attached for a VM, a snapshot restored there)."""
    path: str


Side = Union[str, OnHost]               # a resource name (lent to the host for the copy) or a device


@dataclass
class Datastore:
    settings: "DatastoreSettings"
    api: "Linstor"
    attacher: "Attacher"
    report: Report

    def new_volume(self, name: str, owner: Union["Owner", Mapping[str, str]], step: str,
                   extra: Optional[Mapping[str, str]] = None) -> "NewVolume":
        """The lifetime of a volume this action makes (ownership.NewVolume)."""
        from .ownership import NewVolume
        return NewVolume(self.api, name, owner, step, self.report, extra)

    def copy(self, host: "Host", src: Side, dst: Side, *, sparse: bool,
             replicas: Optional[Mapping[str, Sequence["Replica"]]] = None) -> None:
        """`src`'s bytes onto `dst` on `host` (dd, direct I/O, the datastore's block size). A side
        named by its resource is lent to the host for the copy and given back however it ends
        (a VM's replica there stays); `replicas`: listings already read, by resource. `sparse` only
        where `dst` reads zeros wherever nothing is written (a new thin volume)."""
        from .host_ops import copy
        known = replicas or {}
        with ExitStack() as lent:
            def device(side: Side) -> str:
                if isinstance(side, OnHost):
                    return side.path
                return lent.enter_context(self.attacher.borrowed(host.name, side, known.get(side, ())))
            dst_dev = device(dst)           # the target first: a source lent and a target refused is a wasted attach
            copy(host, device(src), dst_dev, sparse=sparse, block_size=self.settings.dd_block_size)


class OnDatastore:
    """A mixin for what lives in one datastore (a VM disk's volume, a checkpoint, a VM snapshot's
    memory): its settings and LINSTOR session at hand. The class declares the field `ds`."""
    ds: Datastore

    @property
    def api(self) -> "Linstor":
        return self.ds.api

    @property
    def settings(self) -> "DatastoreSettings":
        return self.ds.settings
