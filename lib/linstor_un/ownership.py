"""What this driver made, proven by a mark it wrote — never by a name.

oned hands ids out again after its database is restored, two OpenNebula installations can share
one LINSTOR controller, and anyone can create `one-image-20`. So every volume the driver creates
carries, from the request that creates it:

- `Aux/one/linstor_un/MADE_FOR`: the OpenNebula object it is for, down to its incarnation (an
  image's id and REGTIME, a VM's id and STIME and the disk id: ids repeat, creation times do not);
- `Aux/one/linstor_un/BUILDING`: the step that is making it, removed in the request that marks
  it complete.

A retry reuses a complete volume made for exactly this object, replaces one this driver left
unfinished for exactly this object (or an empty definition: no volume, nothing to lose), and
stops with a one-line error naming anything else. Snapshots carry a token the same way (LINSTOR
copies the definition's properties into each snapshot it takes): the token is set on the
definition for the one request that takes the snapshot.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Callable, Mapping, Optional, Type, Union

from .errors import DriverError
from .rollback import Rollback
from .validate import natural

MADE_FOR = "Aux/one/linstor_un/MADE_FOR"
BUILDING = "Aux/one/linstor_un/BUILDING"
SNAPSHOT_TOKEN = "Aux/one/linstor_un/SNAPSHOT/"      # + snapshot name


@dataclass(frozen=True)
class Owner:
    """The OpenNebula object a volume is made for."""
    kind: str                       # "image", "disk", "checkpoint", "vm snapshot"
    object_id: int
    born: int                       # REGTIME of an image, STIME of a VM; 0 if oned did not say
    disk_id: Optional[int] = None
    snapshot_id: Optional[int] = None   # of a VM snapshot's memory volume

    @classmethod
    def image(cls, image_id: int, regtime: str) -> "Owner":
        return cls("image", image_id, natural(regtime) or 0)

    @classmethod
    def vm_disk(cls, vm_id: int, stime: str, disk_id: int) -> "Owner":
        return cls("disk", vm_id, natural(stime) or 0, disk_id)

    @classmethod
    def checkpoint(cls, vm_id: int, stime: str) -> "Owner":
        return cls("checkpoint", vm_id, natural(stime) or 0)

    @classmethod
    def vm_snapshot(cls, vm_id: int, stime: str, snapshot_id: int) -> "Owner":
        return cls("vm snapshot", vm_id, natural(stime) or 0, snapshot_id=snapshot_id)

    @property
    def mark(self) -> str:
        kind = "image" if self.kind == "image" else "vm"
        text = f"{kind} {self.object_id} born {self.born}"
        if self.kind == "disk":
            text += f" disk {self.disk_id}"
        elif self.kind == "checkpoint":
            text += " checkpoint"
        elif self.kind == "vm snapshot":
            text += f" snapshot {self.snapshot_id} memory"
        return text

    def describe(self) -> str:
        if self.kind == "image":
            return f"image {self.object_id}"
        if self.kind == "checkpoint":
            return f"the checkpoint of VM {self.object_id}"
        if self.kind == "vm snapshot":
            return f"the memory of snapshot {self.snapshot_id} of VM {self.object_id}"
        return f"disk {self.disk_id} of VM {self.object_id}"

    def building(self, step: str) -> dict:
        """The properties a volume is created with."""
        return {MADE_FOR: self.mark, BUILDING: step}

    def snapshot_token(self, snapshot: str) -> str:
        return snapshot_token(self.mark, snapshot)


def snapshot_token(mark: str, snapshot: str) -> str:
    """What a snapshot taken for the owner of `mark` carries (SNAPSHOT_TOKEN + its name)."""
    return f"{mark} snapshot {snapshot}"


class Verdict(Enum):
    MINE = "made for this object, complete"
    UNFINISHED = "made for this object by a run that did not finish"
    EMPTY = "an empty definition (no volume)"
    FOREIGN = "not made by linstor_un for this object"


def judge(props: dict, size_kib: int, owner: Owner, name: str = "") -> Verdict:
    made_for = props.get(MADE_FOR)
    if made_for == owner.mark:
        return Verdict.UNFINISHED if BUILDING in props else Verdict.MINE
    if name and props.get(SNAPSHOT_TOKEN + name) == owner.snapshot_token(name):
        # restored from the base snapshot this owner took (LINSTOR copies the snapshot's
        # definition properties, and with them the image's marks, onto the restored volume)
        return Verdict.UNFINISHED
    if made_for is None and size_kib <= 0:
        return Verdict.EMPTY
    return Verdict.FOREIGN


def foreign(res: str, props: dict, owner: Owner) -> DriverError:
    made_for = props.get(MADE_FOR)
    whose = f"it was made for {made_for}" if made_for else "it carries no linstor_un mark"
    return DriverError(
        f"{res} already exists in LINSTOR and is not {owner.describe()}'s ({whose}; this one is "
        f"{owner.mark}): nothing was changed. If it is a leftover nobody needs, delete it "
        f"(linstor resource-definition delete {res}) and retry; if oned's database was restored or another "
        f"OpenNebula uses this controller, it belongs to another object")


def may_reuse(api, rd, owner: Owner, report) -> bool:
    """For an action about to create `rd.name`, which exists already: True if it is this object's
    complete volume (reuse it), False if it was deleted (unfinished or empty: make it again). One
    LINSTOR is deleting (a node of it offline) is neither: an error says so."""
    if rd.deleting:
        api.being_deleted(rd)
    verdict = judge(rd.props, rd.size_kib, owner, rd.name)
    if verdict is Verdict.MINE:
        return True
    if verdict is Verdict.FOREIGN:
        raise foreign(rd.name, rd.props, owner)
    report.info(f"{rd.name}: {verdict.value}; replacing it")
    api.delete_definition(rd.name, reuse=True)
    return False


def undo_create(api: Any, name: str, mark: str) -> Callable[[], None]:
    """The undo of an action's create of `name`: the volume goes only while it carries `mark`
    (volumes are born with their marks). Registered before the create, it also removes what a
    create that failed half-way made; a volume of the name someone else made in between (another
    OpenNebula on this controller) carries another mark, or none, and stays."""
    def undo() -> None:
        rd = api.resource_definition(name)
        if rd is None:
            return
        # a restore of this owner's snapshot may be cut off while it carries the snapshot's marks
        restored_for_me = rd.props.get(SNAPSHOT_TOKEN + name) == snapshot_token(mark, name)
        if rd.props.get(MADE_FOR) != mark and not restored_for_me:
            whose = rd.props.get(MADE_FOR) or "no linstor_un mark"
            api.report.info(f"{name} is not the volume this action made ({whose}): left as it is")
            return
        api.delete_definition(name)
    return undo


class NewVolume:
    """The lifetime of one volume an action makes, as a context manager:

        with ds.new_volume(res, owner, "mkimage") as new:
            scheduler(...).create(res, size_kib, props=new.props)   # born with its marks
            ...                                                     # new.undo.add(...) for more steps
            new.complete(more_props)                                # marked complete: kept

    `owner`: the Owner it is made for, or the marks it is born with (a copy that takes over an
    existing volume's). If the block fails, what it made goes in reverse order; the volume only
    while it carries this action's mark (`undo_create`), or unconditionally when it is born
    without one (it replaces a volume with no linstor_un mark, made again by the undo). Leaving the
    block without complete() or keep() is a bug: the undo runs, and the action fails."""

    def __init__(self, api: Any, name: str, owner: Union[Owner, Mapping[str, str]], step: str, report: Any,
                 extra: Optional[Mapping[str, str]] = None):
        self.api, self.name = api, name
        self.marks = {MADE_FOR: owner.mark} if isinstance(owner, Owner) else dict(owner)
        self.marks.pop(BUILDING, None)
        self.props = {**self.marks, BUILDING: step, **(extra or {})}
        self.undo = Rollback(report)
        self._done = False

    def __enter__(self) -> "NewVolume":
        mark = self.marks.get(MADE_FOR)
        # registered before the create: it also removes what a create that failed half-way made
        self.undo.add(f"delete {self.name}", undo_create(self.api, self.name, mark) if mark
                      else lambda: self.api.delete_definition(self.name))
        return self

    def keep(self) -> None:
        """Nothing may undo the volume from here on (it holds what exists nowhere else), though it
        is not marked complete yet."""
        self.undo.commit()
        self._done = True

    def complete(self, props: Optional[Mapping[str, str]] = None, delete: tuple[str, ...] = ()) -> None:
        """The volume is made: its building mark goes (with `delete`) and `props` are set in the
        same request, the volume's own marks again with them (a restore may have copied others
        over them); then nothing is undone."""
        self.api.set_props(self.name, {**self.marks, **(props or {})}, delete=[BUILDING, *delete])
        self.keep()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc_type is not None:
            self.undo.run()
        elif not self._done:
            self.undo.run()
            raise RuntimeError(f"{self.name}: the block that made it ended without complete() or keep()")


def may_remove(props: dict, owner: Owner) -> bool:
    """For actions that delete an object's volume: a volume marked for another incarnation is
    not this object's. Unmarked volumes (made by the bash driver or an older linstor_un) keep
    the checks they had (names and Aux/one/VM_ID)."""
    made_for = props.get(MADE_FOR)
    return made_for is None or made_for == owner.mark


def snapshot_is_mine(snapshot, owner: Owner) -> bool:
    return snapshot.props.get(SNAPSHOT_TOKEN + snapshot.name) == owner.snapshot_token(snapshot.name)


def made_by_linstor_un(snapshot) -> bool:
    return (SNAPSHOT_TOKEN + snapshot.name) in snapshot.props


def temporary(of: str, step: str) -> dict:
    """Marks of a temporary volume an action makes from `of` (a snapshot restored to copy from)."""
    return {MADE_FOR: f"temporary copy of {of}", BUILDING: step}


def clear_temporary(api, rd, of: str, of_props: Optional[dict] = None, reuse: bool = True) -> None:
    """A temporary volume that exists already: removed if a killed run of ours left it for `of`:
    marked so, or a restore of `of`'s snapshot that carries `of`'s own marks (LINSTOR copies the
    snapshot's definition properties onto the restored volume), or empty."""
    own_mark = (of_props or {}).get(MADE_FOR)
    made_for = rd.props.get(MADE_FOR)
    empty = made_for is None and rd.size_kib <= 0
    if made_for != f"temporary copy of {of}" and not (own_mark and made_for == own_mark) and not empty:
        raise DriverError(f"{rd.name} already exists and is not a temporary copy linstor_un made of {of} "
                          f"({rd.props.get(MADE_FOR) or 'unmarked'}): nothing was changed; delete it if nobody "
                          f"needs it and retry")
    if rd.deleting:                    # LINSTOR has it already; the name is free only when that is done
        if reuse:
            api.being_deleted(rd)
        return
    api.delete_definition(rd.name, reuse=reuse)
