"""The frame every action file runs in: inputs, lazily opened sessions, one clean exit.

    from linstor_un.action import run
    from linstor_un.one_input import DiskSnapshotArgs

    def main(act: Action, args: DiskSnapshotArgs):
        ...

    run(main, DiskSnapshotArgs.parse)        # oned's call signature (one_input); run(main): raw argv

Sessions (oned API, LINSTOR, SSH) open on first use and close at the end; a DriverError becomes
oned's one-line failure and exit code 1; stdout stays for what the action prints for oned.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional

from .context import Datastore
from .errors import DriverError, Terminated
from .one_input import read_version, remotes_dir
from .report import Report

if TYPE_CHECKING:
    from .images import ImageMessage
    from .settings import DatastoreSettings


STARTED = time.time()


class Action:
    def __init__(self, script: str):
        self.name = os.path.basename(script)
        self.remotes = remotes_dir(script)
        self.version = read_version(self.remotes)
        self.report = Report(self.name, self.version)
        self._one = None
        self._linstor: dict = {}
        self._hosts = None
        self._attachers: list = []
        self._settings: dict = {}
        self._datastores: dict = {}
        self.main_started = STARTED

    # ---- sessions ------------------------------------------------------------------------------
    @property
    def one(self):
        if self._one is None:
            from .one_api import ONED_DEADLINE, OneApi
            from .settings import oned_deadline
            self._one = OneApi(deadline=oned_deadline(self.conf(), ONED_DEADLINE))
        return self._one

    @property
    def hosts(self):
        if self._hosts is None:
            from .remote import COMMAND_TIMEOUT, Hosts
            from .settings import command_timeout
            self._hosts = Hosts(self.report, command_timeout(self.conf(), COMMAND_TIMEOUT))
        return self._hosts

    def conf(self) -> dict:
        from .settings import read_conf
        return read_conf(self.remotes / "etc" / "datastore" / "linstor_un" / "linstor_un.conf")

    def settings(self, ds_id: int, template: Optional[dict] = None, tm_mad: Optional[str] = None):
        """The datastore's settings, from its template (read from oned unless given)."""
        if ds_id not in self._settings:
            from .settings import DatastoreSettings
            if template is None:
                ds = self.one.datastore(ds_id)
                template, tm_mad = ds.template(), ds.tm_mad
            self._settings[ds_id] = DatastoreSettings.parse(ds_id, template, self.conf(), tm_mad or "linstor_un")
        return self._settings[ds_id]

    def datastore_settings(self, msg: "ImageMessage") -> "DatastoreSettings":
        """The settings of the datastore a DS request (images.ImageMessage) is about."""
        return self.settings(msg.ds_id, msg.ds_template, msg.datastore.text("TM_MAD"))

    def placement_settings(self, system_ds: int, arg_ds: int):
        """Settings for a new VM volume: the system datastore's (CLONE_TARGET=SYSTEM), unless the
        system datastore is not a linstor_un one; then the image datastore's."""
        ds = self.one.datastore(system_ds)
        if ds.tm_mad == "linstor_un":
            return self.settings(system_ds)
        return self.settings(arg_ds)

    def linstor(self, settings):
        key = (tuple(settings.connection.controllers), settings.connection.certfile, settings.connection.cafile)
        if key not in self._linstor:
            from .linstor_api import Linstor
            self._linstor[key] = Linstor(settings.connection, self.report)
        return self._linstor[key]

    def datastore(self, ds_id: int, template: Optional[dict] = None, tm_mad: Optional[str] = None) -> Datastore:
        """One datastore with its settings, LINSTOR session and attacher: what an operation on its
        volumes needs, as one argument."""
        return self.context(self.settings(ds_id, template, tm_mad))

    def context(self, settings: "DatastoreSettings") -> Datastore:
        """The Datastore of settings already read."""
        if settings.ds_id not in self._datastores:
            from .attach import Attacher
            api = self.linstor(settings)
            attacher = Attacher(api, self.report, settings.placement.diskless_pool)
            self._attachers.append(attacher)           # its temporary attachments go back at close()
            self._datastores[settings.ds_id] = Datastore(settings, api, attacher, self.report)
        return self._datastores[settings.ds_id]

    def close(self) -> None:
        for attacher in self._attachers:
            attacher.give_back_all()
        if os.environ.get("LINSTOR_UN_STATS"):         # the sessions' counts, before they close
            from . import stats
            stats.write(self, STARTED)
        if self._hosts is not None:
            self._hosts.close()
        for api in self._linstor.values():
            api.close()


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)       # once: the undo must not be cut short
    raise Terminated("terminated (SIGTERM): stopped and undone")


def paths_agree_with_oned(act: Action, args: Any) -> None:
    """Every VM path argv gives (a disk, a VM directory) lies in a system datastore oned has that
    VM in (its current history record's, or the previous one's during a migration): a path
    anywhere else names no file of this VM, and an action must not touch the VM's volumes for it."""
    from dataclasses import fields, is_dataclass
    from .one_input import VmPath
    if not is_dataclass(args) or not hasattr(args, "vm_id"):
        return
    paths = [getattr(args, f.name) for f in fields(args) if isinstance(getattr(args, f.name), VmPath)]
    if not paths:
        return
    homes = act.one.vm(args.vm_id).system_datastores()
    for path in paths:
        if homes and path.system_ds not in homes:
            raise DriverError(f"{path.path} is in system datastore {path.system_ds}; oned has VM {args.vm_id} in "
                              f"{' and '.join(str(h) for h in homes)}: nothing was changed")


def run(main: Callable[[Action, Any], None], parse: Optional[Callable[[list[str]], Any]] = None) -> None:
    """Run `main(act, args)`: `args` parsed from argv by `parse` (a signature of one_input; the
    object it names is the one a failure reports), or argv itself."""
    signal.signal(signal.SIGTERM, _terminated)
    act = Action(sys.argv[0])
    rc = 0
    try:
        act.main_started = time.time()      # the action file's imports are done
        if parse is None:
            main(act, sys.argv[1:])
        else:
            args = parse(sys.argv[1:])
            act.report.object_id = getattr(args, "object_id", None)
            paths_agree_with_oned(act, args)
            main(act, args)
    except DriverError as err:
        if act.report.object_id is None:    # argv named the object before it failed to parse
            act.report.object_id = getattr(err, "object_id", None)
        act.report.fail(str(err))
        rc = 1
    except KeyboardInterrupt:
        act.report.fail("interrupted")
        rc = 1
    except Exception as err:        # a bug: keep the trace for the log, one line for oned
        if os.environ.get("ONE_MAD_DEBUG"):
            traceback.print_exc()
        act.report.fail(f"unexpected error: {type(err).__name__}: {err}")
        rc = 1
    finally:
        try:
            act.close()
        except Exception as err:
            act.report.error(f"cleanup: {err}")
    sys.stdout.flush()
    sys.exit(rc)
