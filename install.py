#!/usr/bin/env python3
"""Install linstor_un into an OpenNebula front-end, or take it out again.

    sudo python3 install.py                 # system layout: /etc/one, /var/lib/one/remotes
    sudo python3 install.py --dry-run       # show the diff of every file it would change
    sudo python3 install.py --uninstall     # remove exactly what it added
    python3 install.py --one-location /opt/one   # self-contained install (ONE_LOCATION)

What it does: copies the driver files into the remotes tree; installs the library and its
dependencies into a virtual environment outside the remotes (which `onehost sync` copies to every
host); writes linstor_un.conf only if there is none; adds linstor_un to oned.conf (TM_MAD,
DATASTORE_MAD, the kvm VM_MAD's save/restore overrides, TM_MAD_CONF, DS_MAD_CONF) and to
vmm_execrc's LIVE_DISK_SNAPSHOTS. Every other byte of those files stays as it was; every changed
file is backed up and replaced atomically. A second run changes nothing.
Only the standard library is used here, so it runs with the system's python3.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent
DRIVER = "linstor_un"
MARK = "# linstor_un: added by install.py"
OVERRIDES = "save=save_linstor_un,restore=restore_linstor_un"
VMM_FILES = ["save_linstor_un", "restore_linstor_un"]
CONF_TEMPLATE = """\
# linstor_un driver settings (KEY=VALUE). Datastore attributes override what they share.
# Block size of the driver's dd copies.
DD_BLOCK_SIZE=64k
# Where non-raw images are staged on the bridge host during an import (STAGING_DIR overrides).
STAGING_DIR=/var/tmp
# Seconds a host command that is not a bulk copy (ln, rm, mkswap, virsh domfsfreeze...) may run
# before it counts as hung and the action fails (copies, imports, save/restore are not limited).
SSH_COMMAND_TIMEOUT=300
"""


class InstallError(Exception):
    pass


def version_tuple(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in re.findall(r"\d+", text)[:3]]
    if len(parts) < 2:
        raise InstallError(f"cannot read an OpenNebula version from '{text.strip()}'")
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


@dataclass
class Layout:
    etc: Path
    remotes: Path
    venv: Path
    version: tuple[int, int, int]

    @property
    def oned_conf(self) -> Path:
        return self.etc / "oned.conf"

    @property
    def vmm_execrc(self) -> Path:
        return self.etc / "vmm_exec" / "vmm_execrc"

    @property
    def conf_file(self) -> Path:
        return self.remotes / "etc" / "datastore" / DRIVER / f"{DRIVER}.conf"

    @property
    def state_file(self) -> Path:
        return self.remotes / "etc" / "datastore" / DRIVER / "install-state.json"


# ---- oned.conf and vmm_execrc edits -------------------------------------------------------------
def _blocks(text: str, name: str):
    """(start, end) of every `NAME = [ ... ]` section (not in comments)."""
    for m in re.finditer(rf"^[ \t]*{name}[ \t]*=[ \t]*\[", text, re.M):
        end = text.find("]", m.end())
        if end < 0:
            raise InstallError(f"oned.conf: unterminated {name} section")
        yield m.start(), end + 1


def _arguments(text: str, start: int, end: int):
    m = re.search(r'ARGUMENTS[ \t]*=[ \t]*"([^"]*)"', text[start:end])
    if not m:
        return None
    return start + m.start(1), start + m.end(1), m.group(1)


def _add_to_list(args: str, flag: str) -> str:
    """Append linstor_un to the `-d`/`-s` list of a MAD's arguments (no flag: every driver is on)."""
    m = re.search(rf"(^|\s){flag}\s+(\S+)", args)
    if not m:
        return args
    items = m.group(2).split(",")
    if DRIVER in items:
        return args
    return args[:m.end(2)] + "," + DRIVER + args[m.end(2):]


def _remove_from_list(args: str, flag: str) -> str:
    m = re.search(rf"(^|\s){flag}\s+(\S+)", args)
    if not m or f",{DRIVER}" not in m.group(2):
        return args
    new = m.group(2).replace(f",{DRIVER}", "", 1)
    return args[:m.start(2)] + new + args[m.end(2):]


def _add_overrides(args: str) -> str:
    m = re.search(r"(^|\s)-l\s+(\S+)", args)
    if m:
        have = m.group(2).split(",")
        keys = {x.split("=")[0].lower() for x in have}
        add = [x for x in OVERRIDES.split(",") if x.split("=")[0] not in keys]
        if not add:
            return args
        return args[:m.end(2)] + "," + ",".join(add) + args[m.end(2):]
    return args + f" -l {OVERRIDES}"


def _remove_overrides(args: str) -> str:
    if args.endswith(f" -l {OVERRIDES}"):
        return args[: -len(f" -l {OVERRIDES}")]
    return args.replace(f",{OVERRIDES}", "", 1)


def tm_conf_block(version: tuple[int, int, int]) -> str:
    attrs = ['NAME = "linstor_un"', 'LN_TARGET = "NONE"', 'CLONE_TARGET = "SYSTEM"', 'SHARED = "YES"',
             'DS_MIGRATE = "YES"', 'ALLOW_ORPHANS = "YES"']
    if version >= (6, 8, 0):
        attrs.append('DISK_TYPE = "BLOCK"')
    if version < (6, 0, 0):
        attrs.append('DRIVER = "raw"')
    return f"\n{MARK}\nTM_MAD_CONF = [\n    " + ",\n    ".join(attrs) + "\n]\n"


def ds_conf_block() -> str:
    return (f'\n{MARK}\nDS_MAD_CONF = [\n    NAME = "linstor_un",\n    REQUIRED_ATTRS = "",\n'
            f'    PERSISTENT_ONLY = "NO",\n    MARKETPLACE_ACTIONS = "export"\n]\n')


def _has_named(text: str, section: str) -> bool:
    for start, end in _blocks(text, section):
        if re.search(r'NAME[ \t]*=[ \t]*"linstor_un"', text[start:end]):
            return True
    return False


def _edit_args(text: str, section: str, edit, pick=None) -> str:
    for start, end in reversed(list(_blocks(text, section))):
        if pick and not pick(text[start:end]):
            continue
        found = _arguments(text, start, end)
        if found:
            a, b, args = found
            text = text[:a] + edit(args) + text[b:]
    return text


def _is_kvm(block: str) -> bool:
    return re.search(r'NAME[ \t]*=[ \t]*"kvm"', block) is not None


def patch_oned(text: str, version) -> str:
    if not list(_blocks(text, "TM_MAD")) or not list(_blocks(text, "DATASTORE_MAD")):
        raise InstallError("oned.conf has no TM_MAD or DATASTORE_MAD section: is this OpenNebula's oned.conf?")
    text = _edit_args(text, "TM_MAD", lambda a: _add_to_list(a, "-d"))
    text = _edit_args(text, "DATASTORE_MAD", lambda a: _add_to_list(_add_to_list(a, "-d"), "-s"))
    text = _edit_args(text, "VM_MAD", _add_overrides, pick=_is_kvm)
    if not _has_named(text, "TM_MAD_CONF"):
        text += tm_conf_block(version)          # appended as is: uninstall takes out exactly this
    if not _has_named(text, "DS_MAD_CONF"):
        text += ds_conf_block()
    return text


def unpatch_oned(text: str, version) -> str:
    text = _edit_args(text, "TM_MAD", lambda a: _remove_from_list(a, "-d"))
    text = _edit_args(text, "DATASTORE_MAD", lambda a: _remove_from_list(_remove_from_list(a, "-d"), "-s"))
    text = _edit_args(text, "VM_MAD", _remove_overrides, pick=_is_kvm)
    for block in (tm_conf_block(version), ds_conf_block()):
        text = text.replace(block, "", 1)
    return text


def execrc_entries(version) -> list[str]:
    return ["kvm-linstor_un"] + (["qemu-linstor_un"] if version >= (6, 8, 0) else [])


def patch_execrc(text: str, version) -> str:
    m = re.search(r'^(LIVE_DISK_SNAPSHOTS=")([^"]*)(")', text, re.M)
    if not m:
        return text.rstrip("\n") + "\n" + f'LIVE_DISK_SNAPSHOTS="{" ".join(execrc_entries(version))}"\n'
    have = m.group(2).split()
    add = [e for e in execrc_entries(version) if e not in have]
    if not add:
        return text
    return text[:m.end(2)] + "".join(" " + e for e in add) + text[m.end(2):]


def unpatch_execrc(text: str, version) -> str:
    for e in execrc_entries(version):
        text = text.replace(" " + e, "", 1)
    return text


# ---- files ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    layout: Layout
    dry_run: bool
    owner: tuple[int, int] | None
    changes: list[str] = field(default_factory=list)
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    def write(self, path: Path, new: str, mode: int = 0o644) -> bool:
        old = path.read_text() if path.exists() else None
        if old == new:
            return False
        self.changes.append(str(path))
        if self.dry_run:
            sys.stdout.writelines(difflib.unified_diff((old or "").splitlines(True), new.splitlines(True),
                                                       f"{path} (now)", f"{path} (after)"))
            return True
        if old is not None:
            shutil.copy2(path, path.with_name(f"{path.name}.{DRIVER}-{self.stamp}.bak"))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(new)
            if old is not None:
                st = path.stat()
                os.chmod(tmp, st.st_mode & 0o7777)
                _chown(tmp, (st.st_uid, st.st_gid))
            else:
                os.chmod(tmp, mode)
                _chown(tmp, self.owner)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return True


def _chown(path, owner) -> None:
    if owner and os.geteuid() == 0:
        os.chown(path, *owner)


def driver_files(layout: Layout, python: str) -> dict[Path, str]:
    """Installed path -> content, with the interpreter of the driver's environment."""
    out = {}
    pairs = [(REPO / "datastore" / DRIVER, layout.remotes / "datastore" / DRIVER),
             (REPO / "tm" / DRIVER, layout.remotes / "tm" / DRIVER)]
    for src_dir, dst_dir in pairs:
        for f in sorted(src_dir.iterdir()):
            if f.is_file():
                out[dst_dir / f.name] = _with_interpreter(f.read_text(), python)
    for name in VMM_FILES:
        out[layout.remotes / "vmm" / "kvm" / name] = _with_interpreter((REPO / "vmm" / "kvm" / name).read_text(),
                                                                       python)
    return out


def _with_interpreter(text: str, python: str) -> str:
    if text.startswith("#!") and "python" in text.split("\n", 1)[0]:
        return f"#!{python}\n" + text.split("\n", 1)[1]
    return text


def is_bash_driver(layout: Layout) -> bool:
    return (layout.remotes / "datastore" / DRIVER / "linstor_utils.sh").exists()


def make_venv(plan: Plan, args) -> str:
    layout = plan.layout
    if args.python:
        return args.python
    python = layout.venv / "bin" / "python3"
    if plan.dry_run:
        print(f"would install the library into {layout.venv}")
        return str(python)
    if not python.exists():
        cmd = [args.base_python, "-m", "venv", str(layout.venv)]
        if args.system_site_packages:
            cmd.append("--system-site-packages")
        _run(cmd, "creating the virtual environment")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if args.wheels:
        pip += ["--no-index", "--find-links", args.wheels]
    if args.no_deps:
        pip.append("--no-deps")
    _run(pip + [str(REPO)], "installing the library and its dependencies"
         + (" (offline from " + args.wheels + ")" if args.wheels else ""))
    _run([str(python), "-c", "import linstor_un, linstor, paramiko, lxml"], "checking the installed library")
    return str(python)


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"{what} failed: {(done.stderr or done.stdout).strip()[-800:]}")


def install(args) -> Plan:
    layout = find_layout(args)
    plan = Plan(layout, args.dry_run, owner(args.owner))
    for path in (layout.oned_conf, layout.vmm_execrc):
        if not path.exists():
            raise InstallError(f"{path} not found (use --etc or --one-location)")
        if not args.dry_run and not os.access(path, os.W_OK):
            raise InstallError(f"no permission to change {path} (run as root or as the owner of OpenNebula)")
    state = load_state(layout)
    python = make_venv(plan, args)
    if is_bash_driver(layout):
        print("found the bash linstor_un driver: its files are replaced (backed up), its linstor_un.conf is kept")
        if not args.dry_run:
            for sub in ("datastore", "tm"):
                d = layout.remotes / sub / DRIVER
                shutil.copytree(d, d.with_name(f"{DRIVER}.bash-{plan.stamp}.bak"))
                shutil.rmtree(d)
    for path, content in driver_files(layout, python).items():
        plan.write(path, content, 0o755)
    if not layout.conf_file.exists():
        plan.write(layout.conf_file, CONF_TEMPLATE)
        state["conf_created"] = hashlib.sha256(CONF_TEMPLATE.encode()).hexdigest()
    oned = layout.oned_conf.read_text()
    plan.write(layout.oned_conf, patch_oned(oned, layout.version))
    execrc = layout.vmm_execrc.read_text()
    plan.write(layout.vmm_execrc, patch_execrc(execrc, layout.version))
    if not args.dry_run:
        state.update({"venv": str(layout.venv) if not args.python else None, "version": list(layout.version)})
        save_state(layout, state, plan.owner)
    return plan


def uninstall(args) -> Plan:
    layout = find_layout(args)
    plan = Plan(layout, args.dry_run, owner(args.owner))
    state = load_state(layout)
    version = tuple(state.get("version") or layout.version)
    plan.write(layout.oned_conf, unpatch_oned(layout.oned_conf.read_text(), version))
    plan.write(layout.vmm_execrc, unpatch_execrc(layout.vmm_execrc.read_text(), version))
    targets = [layout.remotes / "datastore" / DRIVER, layout.remotes / "tm" / DRIVER] + \
        [layout.remotes / "vmm" / "kvm" / n for n in VMM_FILES]
    conf = layout.conf_file
    if conf.exists() and state.get("conf_created") == hashlib.sha256(conf.read_bytes()).hexdigest():
        targets.append(conf)
    if state.get("venv"):
        targets.append(Path(state["venv"]))
    for t in targets:
        if t.exists():
            plan.changes.append(str(t))
            print(f"{'would remove' if args.dry_run else 'removing'} {t}")
            if not args.dry_run:
                shutil.rmtree(t) if t.is_dir() else t.unlink()
    if not args.dry_run:
        layout.state_file.unlink(missing_ok=True)
        for d in (layout.conf_file.parent,):
            try:
                d.rmdir()
            except OSError:
                pass
    return plan


def load_state(layout: Layout) -> dict:
    try:
        return json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return {}


def save_state(layout: Layout, state: dict, own) -> None:
    layout.state_file.parent.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps(state, indent=1) + "\n")
    _chown(layout.state_file, own)


def owner(name: str | None):
    try:
        pw = pwd.getpwnam(name or "oneadmin")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        if name:
            raise InstallError(f"user {name} does not exist")
        return None


def find_layout(args) -> Layout:
    base = args.one_location or os.environ.get("ONE_LOCATION")
    etc = Path(args.etc or (f"{base}/etc" if base else "/etc/one"))
    remotes = Path(args.remotes or (f"{base}/var/remotes" if base else "/var/lib/one/remotes"))
    venv = Path(args.venv or (f"{base}/lib/{DRIVER}/venv" if base else f"/usr/lib/one/{DRIVER}/venv"))
    if args.version:
        version = version_tuple(args.version)
    else:
        try:
            version = version_tuple((remotes / "VERSION").read_text())
        except OSError:
            raise InstallError(f"{remotes}/VERSION not found: give the OpenNebula version with --version")
    if version < (5, 6, 0) or version >= (8, 0, 0):
        raise InstallError(f"OpenNebula {'.'.join(map(str, version))} is not supported (5.6 to 7.x)")
    return Layout(etc, remotes, venv, version)


def next_steps(layout: Layout) -> str:
    v = layout.version
    sync = "onehost sync --force"
    return f"""
Next steps:
  1. restart oned:        systemctl restart opennebula   (or: one stop; one start)
  2. push the remotes:    sudo -u oneadmin {sync}
  3. create the datastores (LINSTOR node names must equal OpenNebula host names):

cat > linstor-images.tmpl <<'EOF'
NAME           = "linstor-images"
DS_MAD         = "linstor_un"
TM_MAD         = "linstor_un"
TYPE           = "IMAGE_DS"
DISK_TYPE      = "BLOCK"
LS_CONTROLLERS = "linstor-controller"
BRIDGE_LIST    = "node1 node2 node3"
RESOURCE_GROUP = "one_rg"
EOF
cat > linstor-system.tmpl <<'EOF'
NAME           = "linstor-system"
TM_MAD         = "linstor_un"
TYPE           = "SYSTEM_DS"
DISK_TYPE      = "BLOCK"
LS_CONTROLLERS = "linstor-controller"
BRIDGE_LIST    = "node1 node2 node3"
RESOURCE_GROUP = "one_rg"
EOF
onedatastore create linstor-images.tmpl; onedatastore create linstor-system.tmpl
(OpenNebula {'.'.join(map(str, v))}; see README for every attribute.)"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Install the linstor_un OpenNebula driver.")
    p.add_argument("--one-location", help="self-contained OpenNebula install (ONE_LOCATION)")
    p.add_argument("--etc", help="directory of oned.conf (default /etc/one)")
    p.add_argument("--remotes", help="remotes directory (default /var/lib/one/remotes)")
    p.add_argument("--venv", help="virtual environment for the library (default /usr/lib/one/linstor_un/venv)")
    p.add_argument("--version", help="OpenNebula version (default: read from <remotes>/VERSION)")
    p.add_argument("--wheels", help="install the dependencies offline from this wheel directory")
    p.add_argument("--python", help="use this interpreter (it already has the library) instead of a venv")
    p.add_argument("--base-python", default=sys.executable, help="interpreter that creates the venv")
    p.add_argument("--system-site-packages", action="store_true", help="let the venv see system packages")
    p.add_argument("--no-deps", action="store_true", help="do not install dependencies into the venv")
    p.add_argument("--owner", help="owner of installed files (default oneadmin, if it exists)")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--uninstall", action="store_true", help="remove what install.py added")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        plan = uninstall(args) if args.uninstall else install(args)
    except InstallError as err:
        print(f"install.py: {err}", file=sys.stderr)
        return 1
    if not plan.changes:
        print("nothing to change: linstor_un is " + ("not installed" if args.uninstall else "already installed"))
    elif args.dry_run:
        print(f"\n(dry run: {len(plan.changes)} file(s) would change; nothing was touched)")
    else:
        print(f"changed {len(plan.changes)} file(s); backups end in .{DRIVER}-{plan.stamp}.bak")
        if not args.uninstall:
            print(next_steps(plan.layout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
