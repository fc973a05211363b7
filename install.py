#!/usr/bin/env python3
"""Install linstor_un into an OpenNebula front-end, or take it out again.

    sudo python3 install.py --dry-run       # what would change: a summary, then the config hunks
    sudo python3 install.py                 # system layout: /etc/one, /var/lib/one/remotes
    sudo python3 install.py --uninstall     # remove exactly what install.py added
    python3 install.py --one-location /opt/one   # self-contained install (ONE_LOCATION)

What it does, in this order, so that a failure leaves the front-end as it was:
1. reads and checks everything first: oned.conf and vmm_execrc (live configuration only: comments
   are never edited), the OpenNebula version, write permission on every file and directory it will
   touch, save/restore overrides that would conflict;
2. installs the library and its dependencies into a virtual environment outside the remotes
   (which `onehost sync` copies to every host), skipped when it is already up to date, and checks
   that the owner of OpenNebula (oneadmin) can run it;
3. writes: the action files, linstor_un.conf (only if there is none), then oned.conf (TM_MAD,
   DATASTORE_MAD, the save/restore overrides of every VM_MAD that runs KVM, TM_MAD_CONF,
   DS_MAD_CONF) and vmm_execrc (LIVE_DISK_SNAPSHOTS). Every other byte stays as it was, whatever
   the encoding or line endings. Replaced files are backed up outside the remotes; a failure while
   writing puts back what was written;
4. records what it added (list items, blocks, attributes, files, directories, the venv) so that
   --uninstall removes exactly that and nothing the admin or the bash driver had.
Only the standard library is used here, so it runs with the system's python3.
"""
import sys

if sys.version_info < (3, 9):       # (the rest of this file is not read before this line runs)
    sys.exit("install.py: Python 3.9 or newer is needed; this is Python %d.%d (%s)"
             % (sys.version_info[0], sys.version_info[1], sys.executable))

import argparse
import contextlib
import difflib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

REPO = Path(__file__).resolve().parent
DRIVER = "linstor_un"
MARK = "# linstor_un: added by install.py"
VMM_ACTIONS = ["save", "restore", "snapshot_create", "snapshot_revert", "snapshot_delete"]
OVERRIDES = [f"{a}={a}_linstor_un" for a in VMM_ACTIONS]
VMM_FILES = [f"{a}_linstor_un" for a in VMM_ACTIONS]
STATE_NAME = "install-state.json"
LIBRARY_CHECK = "import linstor_un.action, linstor_un.linstor_api, linstor, lxml.etree"
CONF_TEMPLATE = """\
# linstor_un driver settings (KEY=VALUE). Datastore attributes override what they share.
# Block size of the driver's dd copies.
DD_BLOCK_SIZE=64k
# Where non-raw images are staged on the bridge host during an import (STAGING_DIR overrides).
STAGING_DIR=/var/tmp
# Seconds a host command that is not a bulk copy (ln, rm, mkswap, virsh domfsfreeze...) may run
# before it counts as hung and the action fails (copies, imports, save/restore are not limited).
SSH_COMMAND_TIMEOUT=300
# Seconds one call to oned's XML-RPC API may take, whole (an oned that trickles its answer).
ONED_DEADLINE=120
"""


class InstallError(Exception):
    pass


def driver_version() -> str:
    m = re.search(r'__version__\s*=\s*"([^"]+)"', (REPO / "lib" / DRIVER / "__init__.py").read_text())
    return m.group(1) if m else "unknown"


def version_tuple(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in re.findall(r"\d+", text)[:3]]
    if len(parts) < 2:
        raise InstallError(f"cannot read an OpenNebula version from '{text.strip()}'")
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def dotted(version) -> str:
    return ".".join(map(str, version))


# ---- files kept byte for byte ---------------------------------------------------------------------
@dataclass
class TextFile:
    """A configuration file as text that encodes back to the very same bytes (non-UTF-8 bytes are
    carried as surrogates), with the line ending it mostly uses. `real` is where it really is."""
    path: Path
    real: Path
    text: str
    newline: str

    @classmethod
    def read(cls, path: Path) -> "TextFile":
        real = Path(os.path.realpath(path))
        try:
            raw = real.read_bytes()
        except FileNotFoundError:
            raise InstallError(f"{path} not found (use --etc or --one-location)") from None
        except OSError as err:
            raise InstallError(f"cannot read {path}: {err.strerror}") from None
        text = raw.decode("utf-8", "surrogateescape")
        return cls(path, real, text, "\r\n" if text.count("\r\n") * 2 > text.count("\n") else "\n")

    def encode(self, text: str) -> bytes:
        return text.encode("utf-8", "surrogateescape")

    def lines(self, *lines: str) -> str:
        return "".join(line + self.newline for line in lines)


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# ---- oned.conf: a small parser of the live (uncommented) configuration ---------------------------
@dataclass
class Value:
    text: str
    start: int          # span of the text (inside the quotes when quoted)
    end: int
    quoted: bool
    key_start: int = -1     # where `KEY =` begins (attributes of a section)

    @property
    def stop(self) -> int:
        """The end of the value with its closing quote."""
        return self.end + (1 if self.quoted else 0)


@dataclass
class Section:
    """`NAME = [ KEY = value, ... ]` at the top level of oned.conf."""
    name: str
    start: int
    close: int          # index of the closing ']'
    attrs: dict[str, Value]

    def get(self, key: str) -> Optional[str]:
        v = self.attrs.get(key.upper())
        return v.text if v else None

    def named(self, name: str) -> bool:
        return (self.get("NAME") or "").lower() == name.lower()


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OnedConf:
    def __init__(self, file: TextFile):
        self.file = file
        self.sections = list(self._parse(file.text))

    def of(self, name: str) -> list[Section]:
        return [s for s in self.sections if s.name.upper() == name]

    def _parse(self, text: str):
        i, n = 0, len(text)
        while i < n:
            i = self._skip(text, i, commas=False)
            if i >= n:
                break
            m = _IDENT.match(text, i)
            if not m:
                i += 1                  # a stray character: oned would complain, we just read on
                continue
            j = self._skip_blank(text, m.end())
            if j < n and text[j] == "=":
                j = self._skip_blank(text, j + 1)
                if j < n and text[j] == "[":
                    section, i = self._section(text, m.group(), m.start(), j + 1)
                    yield section
                    continue
                _, i = self._value(text, j)
                continue
            i = m.end()

    def _section(self, text: str, name: str, start: int, i: int):
        attrs: dict[str, Value] = {}
        n = len(text)
        while True:
            i = self._skip(text, i, commas=True)
            if i >= n:
                raise InstallError(f"{self.file.path}: the {name} section at line {line_of(text, start)} "
                                   f"is not closed")
            if text[i] == "]":
                return Section(name, start, i, attrs), i + 1
            m = _IDENT.match(text, i)
            if not m:
                raise InstallError(f"{self.file.path}: cannot read the {name} section at line "
                                   f"{line_of(text, i)}")
            j = self._skip_blank(text, m.end())
            if j >= n or text[j] != "=":
                raise InstallError(f"{self.file.path}: '=' expected after {m.group()} at line {line_of(text, j)}")
            value, i = self._value(text, self._skip_blank(text, j + 1))
            value.key_start = m.start()
            attrs[m.group().upper()] = value

    def _value(self, text: str, i: int):
        if i < len(text) and text[i] == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise InstallError(f"{self.file.path}: a string at line {line_of(text, i)} is not closed")
            return Value(text[i + 1:j], i + 1, j, True), j + 1
        m = re.compile(r"[^\s,\]#]*").match(text, i)
        end = m.end() if m else i               # (the pattern matches the empty string at worst)
        return Value(text[i:end], i, end, False), end

    @staticmethod
    def _skip(text: str, i: int, commas: bool) -> int:
        while i < len(text):
            c = text[i]
            if c == "#":
                nl = text.find("\n", i)
                i = len(text) if nl < 0 else nl + 1
            elif c.isspace() or (commas and c == ","):
                i += 1
            else:
                break
        return i

    @staticmethod
    def _skip_blank(text: str, i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i


# ---- MAD arguments ----------------------------------------------------------------------------------
# oned starts a MAD through its shell wrapper (`exec ... one_tm.rb $*`): ARGUMENTS become words split
# on white space, read by Ruby's GetoptLong (PERMUTE order: options anywhere; `--` ends them; a long
# option may be an unambiguous prefix and take `=value`; a short one its value attached; an
# OPTIONAL_ARGUMENT takes the next word only when it does not start with '-'; the last occurrence
# of an option wins). Each MAD's table is its GetoptLong.new (5.6 to 7.4).
@dataclass(frozen=True)
class OptSpec:
    long: str
    short: str
    arg: str                # "none", "optional", "required"


THREADS, TIMEOUT = OptSpec("--threads", "-t", "optional"), OptSpec("--timeout", "-w", "optional")
TM_OPTIONS = [THREADS, OptSpec("--tm-types", "-d", "optional"), TIMEOUT]                     # one_tm.rb
DS_OPTIONS = [THREADS, OptSpec("--ds-types", "-d", "optional"),                              # one_datastore.rb
              OptSpec("--system-ds-types", "-s", "optional"), TIMEOUT]
VMM_OPTIONS = [OptSpec("--retries", "-r", "optional"), THREADS,                              # one_vmm_exec.rb
               OptSpec("--local", "-l", "required"), OptSpec("--delegate", "-d", "required"),
               OptSpec("--shell", "-s", "required"), OptSpec("--parallel", "-p", "none"), TIMEOUT]


TM_TYPES, DS_TYPES, SYS_DS_TYPES, LOCAL = TM_OPTIONS[1], DS_OPTIONS[1], DS_OPTIONS[2], VMM_OPTIONS[2]
MAD_OPTIONS = {"TM_MAD": TM_OPTIONS, "DATASTORE_MAD": DS_OPTIONS, "VM_MAD": VMM_OPTIONS}


def option_of(section: str, flag: str) -> OptSpec:
    """A recorded edit's option (records name it by its short flag)."""
    return next(o for o in MAD_OPTIONS[section] if flag in (o.short, o.long))


@dataclass
class Token:
    text: str
    start: int
    end: int


@dataclass
class Occurrence:
    spec: OptSpec
    start: int                      # the option's words (flag and value) in the text
    end: int
    value: Optional[Token]          # None: given without a value


@dataclass
class MadArgs:
    options: list[Occurrence]
    positional: list[Token]

    def last(self, spec: OptSpec) -> Optional[Occurrence]:
        found = [o for o in self.options if o.spec == spec]
        return found[-1] if found else None


def tokens(args: str) -> list[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", args)]


def parse_mad_args(args: str, table: list[OptSpec]) -> MadArgs:
    toks, out, positional, i = tokens(args), [], [], 0

    def takes_next(spec: OptSpec) -> bool:
        return i + 1 < len(toks) and (spec.arg == "required" or
                                      (spec.arg == "optional" and not toks[i + 1].text.startswith("-")))
    while i < len(toks):
        tok = toks[i]
        if tok.text == "--":
            positional += toks[i + 1:]
            break
        if tok.text.startswith("--"):
            name, eq, _ = tok.text.partition("=")
            exact = [o for o in table if o.long == name]
            spec = exact[0] if exact else next(iter(o for o in table if o.long.startswith(name)
                                                    if len([p for p in table if p.long.startswith(name)]) == 1),
                                               None)
            if spec is None:
                raise InstallError(f"'{tok.text}' is not an option this driver takes (oned would not start it)")
            if eq:
                value: Optional[Token] = Token(tok.text[len(name) + 1:], tok.start + len(name) + 1, tok.end)
            elif spec.arg != "none" and takes_next(spec):
                i += 1
                value = toks[i]
            else:
                value = None
            out.append(Occurrence(spec, tok.start, toks[i].end, value))
        elif tok.text.startswith("-") and len(tok.text) > 1:
            j = 1
            while j < len(tok.text):
                spec = next((o for o in table if o.short == "-" + tok.text[j]), None)
                if spec is None:
                    raise InstallError(f"'-{tok.text[j]}' in '{tok.text}' is not an option this driver takes "
                                       f"(oned would not start it)")
                if spec.arg == "none":
                    out.append(Occurrence(spec, tok.start, tok.end, None))
                    j += 1
                    continue
                if j + 1 < len(tok.text):
                    value = Token(tok.text[j + 1:], tok.start + j + 1, tok.end)
                elif takes_next(spec):
                    i += 1
                    value = toks[i]
                else:
                    value = None
                out.append(Occurrence(spec, tok.start, toks[i].end, value))
                break
        else:
            positional.append(tok)
        i += 1
    return MadArgs(out, positional)


def vmm_driver_dir(args: str) -> Optional[str]:
    """The positional argument of one_vmm_exec: the remotes/vmm directory the VM_MAD runs."""
    try:
        positional = parse_mad_args(args, VMM_OPTIONS).positional
    except InstallError:
        return None
    return positional[0].text if positional else None


def option_items(args: str, table: list[OptSpec], spec: OptSpec) -> list[str]:
    """The effective comma list of an option (its last occurrence)."""
    occ = parse_mad_args(args, table).last(spec)
    return [i.strip() for i in occ.value.text.split(",")] if occ and occ.value else []


def add_items(args: str, table: list[OptSpec], spec: OptSpec, items: list[str]) -> tuple[str, list[str], bool]:
    """Args with the items appended to the option's comma list, in the occurrence that counts (the
    last): (new args, items added, option added). Without the option a types list means every
    driver is on: nothing to add; `--local` is added."""
    occ = parse_mad_args(args, table).last(spec)
    if occ is None:
        if spec.long != "--local":
            return args, [], False
        return f"{args} {spec.short} {','.join(items)}", list(items), True
    if occ.value is None:
        raise InstallError(f"'{args[occ.start:occ.end]}' has no list: give it one (e.g. {spec.short} "
                           f"<drivers>) before installing")
    have = [i.strip() for i in occ.value.text.split(",")]
    if spec.long == "--local":
        add = [i for i in items if i.split("=")[0].upper() not in {h.split("=")[0].upper() for h in have}]
    else:
        add = [i for i in items if i not in have]
    if not add:
        return args, [], False
    new = ",".join([*filter(None, occ.value.text.split(",")), *add])
    return args[:occ.value.start] + new + args[occ.value.end:], add, False


def remove_items(args: str, table: list[OptSpec], spec: OptSpec, items: list[str], flag_added: bool) -> str:
    occ = parse_mad_args(args, table).last(spec)
    if occ is None or occ.value is None:
        return args
    have = [x for x in occ.value.text.split(",") if x]
    for item in items:
        if item in have:
            del have[len(have) - 1 - have[::-1].index(item)]      # the last one: the one appended
    if not have and flag_added:
        cut_from = occ.start
        while cut_from > 0 and args[cut_from - 1] in " \t":
            cut_from -= 1
        return args[:cut_from] + args[occ.end:]
    return args[:occ.value.start] + ",".join(have) + args[occ.value.end:]


# ---- the edits ------------------------------------------------------------------------------------
def tm_conf_attrs(version) -> list[tuple[str, str]]:
    attrs = [("NAME", DRIVER), ("LN_TARGET", "NONE"), ("CLONE_TARGET", "SYSTEM"), ("SHARED", "YES"),
             ("DS_MIGRATE", "YES"), ("ALLOW_ORPHANS", "YES")]
    if version < (6, 0, 0):
        attrs.append(("DRIVER", "raw"))
    if version >= (6, 8, 0):
        attrs.append(("DISK_TYPE", "BLOCK"))       # oned reads the image DS disk type from here (6.8+)
    if version >= (7, 2, 0):
        # the default is NO: live migration to another system datastore and migration with disk
        # snapshots are refused unless the driver says it supports them (it does: the volumes and
        # their snapshots stay in LINSTOR, only the links and DS_ID move)
        attrs += [("DS_LIVE_MIGRATE", "YES"), ("DS_MIGRATE_SNAP", "YES")]
    return attrs


def ds_conf_attrs() -> list[tuple[str, str]]:
    return [("NAME", DRIVER), ("REQUIRED_ATTRS", ""), ("PERSISTENT_ONLY", "NO"), ("MARKETPLACE_ACTIONS", "export")]


def block_text(f: TextFile, section: str, attrs: list[tuple[str, str]]) -> str:
    body = ("," + f.newline).join(f'    {k} = "{v}"' for k, v in attrs)
    return f.newline + f.lines(MARK, f"{section} = [") + body + f.newline + "]" + f.newline


def legacy_block_text(section: str, version) -> str:
    """What install.py wrote before it recorded its edits (uninstall of such an install)."""
    if section == "TM_MAD_CONF":
        attrs = ['NAME = "linstor_un"', 'LN_TARGET = "NONE"', 'CLONE_TARGET = "SYSTEM"', 'SHARED = "YES"',
                 'DS_MIGRATE = "YES"', 'ALLOW_ORPHANS = "YES"']
        if version >= (6, 8, 0):
            attrs.append('DISK_TYPE = "BLOCK"')
        if version < (6, 0, 0):
            attrs.append('DRIVER = "raw"')
        return f"\n{MARK}\nTM_MAD_CONF = [\n    " + ",\n    ".join(attrs) + "\n]\n"
    return (f'\n{MARK}\nDS_MAD_CONF = [\n    NAME = "linstor_un",\n    REQUIRED_ATTRS = "",\n'
            f'    PERSISTENT_ONLY = "NO",\n    MARKETPLACE_ACTIONS = "export"\n]\n')


def kvm_vm_mads(conf: OnedConf) -> list[Section]:
    """Every VM_MAD that runs the kvm driver scripts (kvm, and qemu since 6.0, or any the admin added)."""
    out = []
    for s in conf.of("VM_MAD"):
        args = s.get("ARGUMENTS")
        if args is not None and vmm_driver_dir(args) == "kvm" and s.get("NAME"):
            out.append(s)
    return out


def override_conflicts(args: str) -> list[str]:
    """Overrides of our actions to other scripts (parse_actions_list: action names upper-cased)."""
    def action(item: str) -> tuple[str, str]:
        name, _, script = item.partition("=")
        return name.strip().upper(), script.strip()
    ours = dict(action(o) for o in OVERRIDES)
    return [item for item in option_items(args, VMM_OPTIONS, LOCAL)
            if action(item)[0] in ours and action(item)[1] != ours[action(item)[0]]]


class Edits:
    """Changes to one text, as (start, end, replacement) on the text read, applied at once."""

    def __init__(self, text: str):
        self.text = text
        self.spans: dict[tuple[int, int], str] = {}

    def replace(self, start: int, end: int, new: str) -> None:
        """A later replacement of the same span supersedes the earlier one."""
        self.spans[(start, end)] = new

    def append(self, new: str) -> None:
        end = (len(self.text), len(self.text))
        self.spans[end] = self.spans.get(end, "") + new

    def apply(self) -> str:
        text = self.text
        for (start, end), new in sorted(self.spans.items(), reverse=True):
            text = text[:start] + new + text[end:]
        return text


def patch_oned(f: TextFile, version, record: dict) -> tuple[str, list[str]]:
    """The new oned.conf text and what changed, in words. `record` is what an earlier run of this
    install.py added (it is updated to what is added now)."""
    conf = OnedConf(f)
    if not conf.of("TM_MAD") or not conf.of("DATASTORE_MAD"):
        raise InstallError(f"{f.path} has no TM_MAD or DATASTORE_MAD section: is this OpenNebula's oned.conf?")
    kvms = kvm_vm_mads(conf)
    for s in kvms:
        bad = override_conflicts(s.get("ARGUMENTS") or "")
        if bad:
            raise InstallError(
                f"{f.path} line {line_of(f.text, s.start)}: VM_MAD \"{s.get('NAME')}\" already overrides "
                f"{', '.join(bad)} (-l); linstor_un needs {','.join(OVERRIDES)} there. Merge the two "
                f"(e.g. call your script from {VMM_FILES[0]}) or remove yours, then run install.py again")
    edits, said = Edits(f.text), []
    lists = record.setdefault("lists", [])

    def extend(section: Section, spec: OptSpec, items: list[str], key: dict) -> None:
        value = section.attrs.get("ARGUMENTS")
        if value is None or not value.quoted:
            return
        where = f"{f.path} line {line_of(f.text, section.start)} ({key['section']} ARGUMENTS)"
        try:
            new, added, flag_added = add_items(value.text, MAD_OPTIONS[key["section"]], spec, items)
        except InstallError as err:
            raise InstallError(f"{where}: {err}") from None
        if added:
            edits.replace(value.start, value.end, new)
            value.text = new                       # a second flag of the same section sees the first edit
            entry = {**key, "flag": spec.short, "items": added, "flag_added": flag_added}
            if entry not in lists:
                lists.append(entry)
            said.append(f"{key['section']}{' ' + key['name'] if key.get('name') else ''} {spec.short} "
                        f"+{','.join(added)}")

    for s in conf.of("TM_MAD"):
        extend(s, TM_TYPES, [DRIVER], {"section": "TM_MAD"})
    for s in conf.of("DATASTORE_MAD"):
        extend(s, DS_TYPES, [DRIVER], {"section": "DATASTORE_MAD"})
        extend(s, SYS_DS_TYPES, [DRIVER], {"section": "DATASTORE_MAD"})
    for s in kvms:
        extend(s, LOCAL, OVERRIDES, {"section": "VM_MAD", "name": s.get("NAME")})

    blocks = record.setdefault("blocks", [])
    attrs_added = record.setdefault("attributes", [])
    for section, wanted in (("TM_MAD_CONF", tm_conf_attrs(version)), ("DS_MAD_CONF", ds_conf_attrs())):
        ours = next((b for b in blocks if b["section"] == section), None)
        existing = [s for s in conf.of(section) if s.named(DRIVER)]
        new_block = block_text(f, section, wanted)
        if ours and ours["text"] in f.text:
            if ours["text"] != new_block:                    # another OpenNebula version: its block
                at = f.text.index(ours["text"])
                edits.replace(at, at + len(ours["text"]), new_block)
                ours["text"] = new_block
                said.append(f"{section} {DRIVER} updated for OpenNebula {dotted(version)}")
            continue
        if ours:
            blocks.remove(ours)                          # edited by the admin since: theirs now
        if not existing:
            edits.append(new_block)
            blocks.append({"section": section, "text": new_block})
            said.append(f"{section} {DRIVER} added")
            continue
        # someone else's block (the bash driver's, or the admin's): add only what this version
        # needs, to the block oned reads (the first of that name)
        block = existing[0]
        missing = [(k, v) for k, v in wanted if k not in block.attrs]
        if not missing:
            continue
        last = max(block.attrs.values(), key=lambda v: v.end)
        text = "".join(f',{f.newline}    {k} = "{v}"' for k, v in missing)
        edits.replace(last.stop, last.stop, text)
        recorded = next((a for a in attrs_added if a["section"] == section and "attrs" in a), None)
        if recorded is None:
            recorded = {"section": section, "attrs": {}}
            attrs_added.append(recorded)
        recorded["attrs"].update(dict(missing))
        said.append(f"{section} {DRIVER} (existing) +{','.join(k for k, _ in missing)}")
    return edits.apply(), said


def unpatch_oned(f: TextFile, record: dict) -> tuple[str, list[str]]:
    conf = OnedConf(f)
    edits, said = Edits(f.text), []
    for entry in record.get("lists", []):
        for s in conf.of(entry["section"]):
            if entry.get("name") and not s.named(entry["name"]):
                continue
            value = s.attrs.get("ARGUMENTS")
            if value is None:
                continue
            spec = option_of(entry["section"], entry["flag"])
            # the flag goes with its last item when any run added it (a later run may have added
            # items to the list an earlier run made: its entry says the flag was there)
            flag_added = any(e.get("flag_added", False) for e in record.get("lists", [])
                             if (e["section"], e.get("name"), e["flag"]) ==
                             (entry["section"], entry.get("name"), entry["flag"]))
            try:
                new = remove_items(value.text, MAD_OPTIONS[entry["section"]], spec, entry["items"], flag_added)
            except InstallError as err:
                raise InstallError(f"{f.path} line {line_of(f.text, s.start)} ({entry['section']} ARGUMENTS): "
                                   f"{err}") from None
            if new != value.text:
                edits.replace(value.start, value.end, new)
                value.text = new
                said.append(f"{entry['section']}{' ' + entry['name'] if entry.get('name') else ''} "
                            f"{entry['flag']} -{','.join(entry['items'])}")
    # attributes added to someone else's linstor_un block come out of that block only, and only
    # where they still have the value install.py gave them
    for entry in record.get("attributes", []):
        block = next((s for s in conf.of(entry["section"]) if s.named(DRIVER)), None)
        if block is None:
            continue
        if "attrs" in entry:
            gone = []
            for key, value in entry["attrs"].items():
                attr = block.attrs.get(key.upper())
                if attr is None or attr.text != value:
                    continue
                before = [v for v in block.attrs.values() if v.stop <= attr.key_start]
                if not before:
                    continue                # the block's first attribute: not one install.py adds
                edits.replace(max(v.stop for v in before), attr.stop, "")
                gone.append(key)
            if gone:
                said.append(f"{entry['section']} {DRIVER}: {','.join(gone)} (added by install.py) removed")
        else:                               # recorded as text by an earlier install.py: in that block only
            at = f.text.find(entry["text"], block.start, block.close + 1)
            if at >= 0:
                edits.replace(at, at + len(entry["text"]), "")
                said.append(f"{entry['section']} {DRIVER}: attributes added by install.py removed")
    text = edits.apply()
    for entry in record.get("blocks", []):
        if entry["text"] in text:
            text = text.replace(entry["text"], "", 1)
            said.append(f"{entry['section']} {DRIVER} removed")
        else:
            print(f"install.py: the {entry['section']} block of {DRIVER} was edited since install: left in "
                  f"{f.path}", file=sys.stderr)
    return text, said


# ---- vmm_execrc ---------------------------------------------------------------------------------------
_ASSIGNMENT = re.compile(r"^[ \t]*(?:export[ \t]+)?LIVE_DISK_SNAPSHOTS=", re.M)


@dataclass
class ShellWord:
    """The value word of a shell assignment: its raw text (quotes and escapes as written) and the
    value bash gives it."""
    raw: str
    start: int
    end: int
    value: str


def shell_word(text: str, i: int) -> ShellWord:
    """The word at `i` read by bash's rules (vmm_execrc is sourced by bash): unquoted characters,
    backslash escapes, '...', "..." (backslash escapes only $ ` " \\ and newline there), up to
    unquoted white space or an operator. An expansion ($, backtick) cannot be known without
    running the file: refused."""
    start, out = i, []

    def dynamic(at: int) -> InstallError:
        return InstallError(f"vmm_execrc line {line_of(text, at)}: LIVE_DISK_SNAPSHOTS is computed ($ or `): "
                            f"write it as a plain list, then run install.py again")
    while i < len(text):
        c = text[i]
        if c in " \t\n;&|<>()":
            break
        if c == "\\":
            if i + 1 < len(text) and text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
        elif c == "'":
            close = text.find("'", i + 1)
            if close < 0:
                raise InstallError(f"vmm_execrc line {line_of(text, i)}: the LIVE_DISK_SNAPSHOTS quote is not closed")
            out.append(text[i + 1:close])
            i = close + 1
        elif c == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\\n':
                    if text[i + 1] != "\n":
                        out.append(text[i + 1])
                    i += 2
                    continue
                if text[i] in "$`":
                    raise dynamic(i)
                out.append(text[i])
                i += 1
            if i >= len(text):
                raise InstallError(f"vmm_execrc line {line_of(text, start)}: the LIVE_DISK_SNAPSHOTS quote is not "
                                   f"closed")
            i += 1
        elif c in "$`":
            raise dynamic(i)
        else:
            out.append(c)
            i += 1
    return ShellWord(text[start:i], start, i, "".join(out))


def bash_quoted(value: str) -> str:
    return '"' + re.sub(r'([$`"\\])', r"\\\1", value) + '"'


def live_snapshots_value(text: str) -> Optional[ShellWord]:
    """The value of the last live LIVE_DISK_SNAPSHOTS assignment (the one the shell keeps)."""
    found = None
    for m in _ASSIGNMENT.finditer(text):
        found = shell_word(text, m.end())
    return found


def patch_execrc(f: TextFile, entries: list[str], record: dict) -> tuple[str, list[str]]:
    word = live_snapshots_value(f.text)
    if word is None:
        text = f.text + ("" if f.text.endswith("\n") or not f.text else f.newline)
        line = f.lines(MARK, f'LIVE_DISK_SNAPSHOTS="{" ".join(entries)}"')
        record["assignment"] = line
        return text + line, [f"LIVE_DISK_SNAPSHOTS added: {' '.join(entries)}"]
    have = word.value.split()
    add = [e for e in entries if e not in have]
    if not add:
        return f.text, []
    record.setdefault("items", []).extend(add)
    if word.raw.startswith('"') and word.raw.endswith('"') and word.raw[1:-1] == word.value:
        new = word.raw[:-1] + ("" if not word.value.strip() or word.value.endswith(" ") else " ") + " ".join(add) + '"'
    else:                           # escapes, single quotes, no quotes: written again, double-quoted
        new = bash_quoted(" ".join(have + add))
    earlier = record.get("word", {})
    record["word"] = {"before": earlier["before"] if earlier.get("after") == word.raw else word.raw, "after": new}
    return f.text[:word.start] + new + f.text[word.end:], [f"LIVE_DISK_SNAPSHOTS +{' '.join(add)}"]


def unpatch_execrc(f: TextFile, record: dict) -> tuple[str, list[str]]:
    text, said = f.text, list[str]()
    if record.get("assignment") and record["assignment"] in text:
        return text.replace(record["assignment"], "", 1), ["LIVE_DISK_SNAPSHOTS assignment removed"]
    word = live_snapshots_value(text)
    if word is None or not record.get("items"):
        return text, said
    words = word.value.split()
    removed = [item for item in record["items"] if item in words]
    if not removed:
        return text, said
    before = record.get("word", {}).get("before")
    if record.get("word", {}).get("after") == word.raw and \
            not set(shell_word(before, 0).value.split()) & set(record["items"]):
        new = before                                            # as install.py left it: as it was before
    elif "unquoted" in record and word.raw.startswith('"') and \
            " ".join(w for w in words if w not in removed) == record["unquoted"]:
        new = record["unquoted"]                                # (recorded by an earlier install.py)
    else:
        for item in removed:
            words.remove(item)
        new = bash_quoted(" ".join(words))
    return text[:word.start] + new + text[word.end:], [f"LIVE_DISK_SNAPSHOTS -{' '.join(removed)}"]


# ---- where things go ------------------------------------------------------------------------------
@dataclass
class Layout:
    etc: Path
    remotes: Path
    venv: Path
    state_dir: Path
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
        return self.state_dir / STATE_NAME

    @property
    def legacy_state_file(self) -> Path:
        return self.remotes / "etc" / "datastore" / DRIVER / STATE_NAME

    @property
    def driver_dirs(self) -> list[Path]:
        return [self.remotes / "datastore" / DRIVER, self.remotes / "tm" / DRIVER]


def absolute(path: Optional[str]) -> Optional[Path]:
    """Absolute, without resolving links (a venv's python is a link that must stay one)."""
    return Path(os.path.abspath(os.path.expanduser(path))) if path else None


def find_layout(args) -> Layout:
    base = absolute(args.one_location or os.environ.get("ONE_LOCATION"))
    etc = absolute(args.etc) or (base / "etc" if base else Path("/etc/one"))
    remotes = absolute(args.remotes) or (base / "var" / "remotes" if base else Path("/var/lib/one/remotes"))
    venv = absolute(args.venv) or (base / "lib" / DRIVER / "venv" if base else Path(f"/usr/lib/one/{DRIVER}/venv"))
    state_dir = absolute(args.state_dir) or remotes.parent / DRIVER
    if args.one_version:
        version = version_tuple(args.one_version)
    else:
        try:
            version = version_tuple((remotes / "VERSION").read_text())
        except OSError:
            raise InstallError(f"{remotes}/VERSION not found: give the OpenNebula version with --one-version")
    if version < (5, 6, 0) or version >= (8, 0, 0):
        raise InstallError(f"OpenNebula {dotted(version)} is not supported (5.6 to 7.x)")
    return Layout(etc, remotes, venv, state_dir, version)


def load_state(layout: Layout) -> dict:
    for path in (layout.state_file, layout.legacy_state_file):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "oned" not in state:
            state = legacy_record(state, layout)
        return state
    return {}


def venvs_created(state: dict) -> list[str]:
    """The virtual environments install.py created (records before this one: the venv, if made)."""
    made = list(state.get("venvs_created", []))
    if state.get("venv_created") and state.get("venv") and state["venv"] not in made:
        made.append(state["venv"])
    return made


def legacy_record(old: dict, layout: Layout) -> dict:
    """An install by the install.py that recorded only the venv, the conf and the version: what it
    added is known from its rules."""
    version = tuple(old.get("version") or layout.version)
    if any(p.is_dir() for p in legacy_backups(layout)):
        # it replaced a bash driver, whose own entries in oned.conf and vmm_execrc its rules cannot
        # tell from its additions: they are left alone (--restore-bash needs them); only its marked
        # blocks, matched by their exact text, are its own
        return {"legacy": True, "version": list(version), "venv": old.get("venv"),
                "venv_created": bool(old.get("venv")), "conf_created": old.get("conf_created"),
                "oned": {"lists": [], "blocks": [{"section": s, "text": legacy_block_text(s, version)}
                                                 for s in ("TM_MAD_CONF", "DS_MAD_CONF")]},
                # (the bash driver's README adds kvm-linstor_un only)
                "execrc": {"items": ["qemu-linstor_un"]} if version >= (6, 8, 0) else {},
                "files": {}, "dirs": [str(d) for d in layout.driver_dirs]}
    return {
        "legacy": True,
        "version": list(version),
        "venv": old.get("venv"),
        "venv_created": bool(old.get("venv")),
        "conf_created": old.get("conf_created"),
        "oned": {"lists": [{"section": "TM_MAD", "flag": "-d", "items": [DRIVER]},
                           {"section": "DATASTORE_MAD", "flag": "-d", "items": [DRIVER]},
                           {"section": "DATASTORE_MAD", "flag": "-s", "items": [DRIVER]},
                           {"section": "VM_MAD", "name": "kvm", "flag": "-l", "items": OVERRIDES,
                            "flag_added": True}],
                 "blocks": [{"section": s, "text": legacy_block_text(s, version)}
                            for s in ("TM_MAD_CONF", "DS_MAD_CONF")]},
        "execrc": {"items": ["kvm-linstor_un"] + (["qemu-linstor_un"] if version >= (6, 8, 0) else [])},
        "files": {},
        "dirs": [str(d) for d in layout.driver_dirs],
    }


# ---- writing, undone on failure -------------------------------------------------------------------
def owner_ids(name: Optional[str]) -> Optional[tuple[int, int, str]]:
    try:
        pw = pwd.getpwnam(name or "oneadmin")
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    except KeyError:
        if name:
            raise InstallError(f"user {name} does not exist") from None
        return None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


JOURNAL_NAME = "install.journal"


class Transaction:
    """Every write of a run, undone in reverse on failure. Each step's undo is written to a journal
    (fsync'ed) before the step runs, so a run killed at any point (SIGKILL, a dropped SSH session)
    is undone by the next run (`undo_interrupted`). Replaced files are backed up outside the
    remotes first."""

    def __init__(self, layout: Layout, owner, dry_run: bool):
        self.layout, self.owner, self.dry_run = layout, owner, dry_run
        self.undo: list[dict] = []
        self.created_dirs: list[Path] = []
        self.backup_dir: Optional[Path] = None
        self.changed: list[str] = []
        self._journal: Optional[int] = None

    # -- the journal -----------------------------------------------------------------------------
    def begin(self) -> None:
        """Opens the journal (the state directory is made first: where the record lives)."""
        if self.dry_run:
            return
        state_dir = self.layout.state_dir
        made = not state_dir.exists()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._journal = os.open(state_dir / JOURNAL_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if made:
            self.chown(state_dir)
            self.record({"op": "rmdir", "path": str(state_dir), "journal_dir": True})

    def record(self, op: dict) -> None:
        self.undo.append(op)
        if self._journal is not None:
            os.write(self._journal, (json.dumps(op) + "\n").encode())
            os.fsync(self._journal)
        # tests: stop the run right after its n-th journaled step ("<n>:<signal>")
        stop = os.environ.get("LINSTOR_UN_INSTALL_TEST_STOP", "")
        if stop and stop.split(":")[0] == str(len(self.undo)):
            os.kill(os.getpid(), getattr(signal, stop.split(":")[1] if ":" in stop else "SIGKILL"))

    def commit(self) -> None:
        """The run is complete: nothing to undo any more."""
        self.undo.clear()
        self._close(remove=True)

    def _close(self, remove: bool) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
            if remove:
                (self.layout.state_dir / JOURNAL_NAME).unlink(missing_ok=True)

    def rollback(self) -> None:
        failed = undo_steps(self.undo)
        self.undo.clear()
        self._close(remove=not failed)

    # -- the steps -------------------------------------------------------------------------------
    def backups(self) -> Path:
        if self.backup_dir is None:
            root = self.layout.state_dir / "backups"
            self.makedirs(root, private=True)
            made = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"
            self.record({"op": "rmtree", "path": str(made)})         # (journaled before it exists)
            made.mkdir(mode=0o700)
            self.backup_dir = made
        return self.backup_dir

    def backup_path(self, path: Path) -> Path:
        return self.backups() / str(path).lstrip("/")

    def makedirs(self, path: Path, private: bool = False) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            self.record({"op": "rmdir", "path": str(d)})
            d.mkdir(mode=0o700 if private else 0o755)
            self.chown(d)
            self.created_dirs.append(d)

    def chown(self, path) -> None:
        if self.owner and os.geteuid() == 0:
            os.chown(path, self.owner[0], self.owner[1], follow_symlinks=False)

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        real = Path(os.path.realpath(path))
        old = real.read_bytes() if real.exists() else None
        if old == data:
            return
        self.changed.append(str(path))
        if old is not None:
            saved = self.backup_path(real)
            saved.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, saved)
            self.record({"op": "restore", "path": str(real), "saved": str(saved)})
        else:
            self.makedirs(real.parent)
            self.record({"op": "unlink", "path": str(real)})
        self.record({"op": "unlink", "path": str(temporary(real))})
        put_file(real, data, None, mode, self.chown)

    def rmtree_on_undo(self, path: Path) -> None:
        """`path` is about to be made by this run (a venv): undo removes it whole."""
        self.record({"op": "rmtree", "path": str(path)})

    def move_away(self, path: Path, name: str) -> Path:
        """Moves a directory into this run's backups (the bash driver's files)."""
        dest = self.backups() / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.record({"op": "move_back", "from": str(dest), "to": str(path)})
        shutil.move(str(path), str(dest))
        self.changed.append(str(path))
        return dest

    def remove(self, path: Path) -> None:
        if not path.exists() and not path.is_symlink():
            return
        self.changed.append(str(path))
        if self.dry_run:
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def put_file(real: Path, data: bytes, like: Optional[Path], mode: int = 0o644,
             chown: Callable[[object], None] = lambda path: None) -> None:
    """`data` at `real`, atomically (a temporary file renamed), with the mode and owner of what was
    there (or of `like`), else `mode` and the install's owner."""
    tmp = str(temporary(real))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        ref = real if real.exists() else like
        if ref is not None:
            st = ref.stat()
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        else:
            os.chmod(tmp, mode)
            chown(tmp)
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def temporary(real: Path) -> Path:
    """The one temporary name a file is written under before it is renamed into place (a name
    known in advance: the journal can say it before it exists)."""
    return real.with_name(f".{real.name}.linstor_un-install")


def undo_steps(ops: list[dict]) -> bool:
    """Undoes journaled steps, newest first. False if one could not be undone (said on stderr)."""
    ok = True
    for op in reversed(ops):
        try:
            path = Path(op.get("path") or op.get("to") or "")
            if op["op"] == "restore":
                if Path(op["saved"]).exists():
                    put_file(path, Path(op["saved"]).read_bytes(), Path(op["saved"]))
            elif op["op"] == "unlink":
                path.unlink(missing_ok=True)
            elif op["op"] == "rmtree":
                shutil.rmtree(path, ignore_errors=True)
            elif op["op"] == "move_back":
                if Path(op["from"]).exists() and not path.exists():
                    shutil.move(op["from"], str(path))
            elif op["op"] == "rmdir":
                if op.get("journal_dir"):
                    (path / JOURNAL_NAME).unlink(missing_ok=True)
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        except OSError as err:
            ok = False
            print(f"install.py: could not undo a step ({op['op']} {op.get('path') or op.get('to')}): "
                  f"{err.strerror or err}", file=sys.stderr)
    return ok


def undo_interrupted(layout: Layout, dry_run: bool) -> None:
    """A run that was killed left its journal: its steps are undone before anything else."""
    journal = layout.state_dir / JOURNAL_NAME
    if not journal.exists():
        return
    ops = []
    for line in journal.read_text(errors="replace").splitlines():
        try:
            ops.append(json.loads(line))
        except ValueError:
            break                               # a line cut by the kill: its step never ran
    if dry_run:
        print(f"an interrupted run of install.py left {journal}: a real run undoes its {len(ops)} step(s) first")
        return
    print(f"install.py: undoing an interrupted run ({len(ops)} step(s), {journal})", file=sys.stderr)
    if undo_steps(ops):
        journal.unlink(missing_ok=True)
    else:
        raise InstallError(f"an interrupted run could not be undone whole: see above; {journal} is kept")


def check_writable(paths: list[Path]) -> None:
    for path in paths:
        real = Path(os.path.realpath(path))
        target = real if real.exists() else nearest_existing(real)
        if not target.is_dir() and not real.exists() and target != real:
            raise InstallError(f"{target} is a file, where {real} needs a directory")
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            raise InstallError(f"{target} is on a read-only file system")
        if not os.access(target, os.W_OK):
            raise InstallError(f"no permission to write {target} (run as root or as the owner of OpenNebula)")
        if real.exists() and not os.access(real.parent, os.W_OK):
            raise InstallError(f"no permission to write in {real.parent}, where {path} is replaced atomically")


# ---- the library's virtual environment ------------------------------------------------------------
def library_fingerprint(python: str) -> str:
    h = hashlib.sha256(python.encode())
    for f in sorted((REPO / "lib").rglob("*.py")) + [REPO / "pyproject.toml"]:
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def default_base_python() -> str:
    """Debian's interpreter, which every user can run, before whatever python ran this script."""
    for candidate in ("/usr/bin/python3",):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def run_as(owner, cmd: list[str], what: str) -> None:
    kwargs = {}
    if owner and os.geteuid() == 0 and owner[0] != 0:
        kwargs = {"user": owner[0], "group": owner[1], "extra_groups": []}
    who = f" as {owner[2]}" if kwargs else ""
    def failed(detail: str) -> InstallError:
        if kwargs:                  # say which directory keeps the owner out
            for path in dict.fromkeys([cmd[0], os.path.realpath(cmd[0])]):
                closed = closed_dir(Path(path), owner[0], owner[1])
                if closed is not None:
                    detail += f" ({owner[2]} cannot enter {closed}, mode {closed.stat().st_mode & 0o777:o})"
                    break
        return InstallError(f"{what}{who} failed: {detail}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"}, **kwargs)
    except OSError as err:
        raise failed(err.strerror or str(err)) from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
        raise failed(lines[-1] if lines else f"exit code {done.returncode}")


def closed_dir(path: Path, uid: int, gid: int) -> Optional[Path]:
    """The first directory on the way to `path` that user uid with group gid (run_as gives it no
    other group) may not enter."""
    for d in [*reversed(path.parents)]:
        try:
            st = d.stat()
        except OSError:
            return None
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if uid != 0 and not st.st_mode & bit:
            return d
    return None


def step(message: str) -> float:
    print(message, flush=True)
    return time.monotonic()


def run_step(cmd: list[str], what: str, hint: Optional[tuple[str, str]] = None) -> None:
    """`hint`: (pattern, advice): the advice is given only when the output matches the pattern."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        lines = [ln for ln in output.splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.search(r"error|not found|no matching|denied|no space", ln, re.I)]
        detail = " / ".join(dict.fromkeys((errors[:1] + lines[-1:]))) if lines else f"exit code {done.returncode}"
        if re.search(r"No space left on device|Errno 28", output):
            detail = f"no space left on device ({detail})"
        elif hint and re.search(hint[0], output):
            detail += f" ({hint[1]})"
        raise InstallError(f"{what} failed: {detail}")


def ensure_venv(tx: Transaction, args, state: dict) -> tuple[str, bool]:
    """The interpreter the action files run with, and whether the venv is new in this run."""
    layout = tx.layout
    if args.python:
        python = str(absolute(args.python))
        if not os.access(python, os.X_OK):
            raise InstallError(f"--python {python} is not an executable")
        run_as(tx.owner, [python, "-c", LIBRARY_CHECK], f"checking that {python} has the library")
        return python, False
    python = str(layout.venv / "bin" / "python3")
    fingerprint = library_fingerprint(args.base_python)
    if tx.dry_run:
        up_to_date = state.get("fingerprint") == fingerprint and Path(python).exists()
        print(f"library: {'up to date in' if up_to_date else 'would be installed into'} {layout.venv}")
        return python, False
    created = False
    if Path(python).exists() and state.get("fingerprint") == fingerprint:
        try:
            run_as(tx.owner, [python, "-c", LIBRARY_CHECK], "checking the installed library")
            print(f"library: up to date in {layout.venv}")
            return python, False
        except InstallError:
            pass                                    # broken since: install again
    if not layout.venv.exists():
        t0 = step(f"creating the virtual environment {layout.venv} (with {args.base_python}) ...")
        tx.makedirs(layout.venv.parent)
        venv_cmd = [args.base_python, "-m", "venv", str(layout.venv)]
        if args.system_site_packages:
            venv_cmd.append("--system-site-packages")
        tx.rmtree_on_undo(layout.venv)
        run_step(venv_cmd, "creating the virtual environment",
                 hint=(r"ensurepip|No module named venv|python3-venv",
                       f"is python3-venv installed for {args.base_python}?"))
        created = True
        tx.chown(layout.venv)
        run_as(tx.owner, [python, "-c", "import sys"],
               f"running {python}, which links to {os.path.realpath(python)} (the owner of OpenNebula must be "
               f"able to run it: use --base-python /usr/bin/python3)")
        print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="linstor_un-build-") as build:
        # pip builds from a copy: the checkout may belong to someone else or be read-only
        src = Path(build) / "src"
        src.mkdir()
        for name in ("lib", "pyproject.toml", "README.md"):
            item = REPO / name
            if item.is_dir():
                shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            elif item.exists():
                shutil.copy(item, src / name)
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir",
               "--upgrade"]
        if args.wheels:
            pip += ["--no-index", "--find-links", str(absolute(args.wheels))]
        if args.no_deps:
            pip.append("--no-deps")
        t0 = step("installing the library and its dependencies (python-linstor, lxml)"
                  + (f" offline from {args.wheels}" if args.wheels else "") + " ... (20-60 s)")
        run_step(pip + [str(src)], "installing the library and its dependencies"
                 + (f" (offline from {args.wheels})" if args.wheels else ""))
        print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    if tx.owner and os.geteuid() == 0:
        for root, dirs, files in os.walk(layout.venv):
            for name in dirs + files:
                tx.chown(os.path.join(root, name))
        tx.chown(layout.venv)
    try:
        run_as(tx.owner, [python, "-c", LIBRARY_CHECK], f"running the installed library with {python}")
    except InstallError as err:
        if "No module named" in str(err) and args.no_deps:
            raise InstallError(f"{err} — with --no-deps the venv has only the driver: install python-linstor and "
                               f"lxml into it first, or run without --no-deps") from None
        if "No module named" in str(err):
            raise
        raise InstallError(f"{err} (the interpreter must be one the owner of OpenNebula can run: "
                           f"use --base-python /usr/bin/python3)") from None
    state["fingerprint"] = fingerprint
    return python, created


# ---- the driver files ---------------------------------------------------------------------------------
def driver_files(layout: Layout, python: str) -> dict[Path, bytes]:
    """Installed path -> content, with the interpreter of the driver's environment."""
    out = {}
    for sub in ("datastore", "tm"):
        for f in sorted((REPO / sub / DRIVER).iterdir()):
            if f.is_file():
                out[layout.remotes / sub / DRIVER / f.name] = with_interpreter(f.read_bytes(), python)
    for name in VMM_FILES:
        out[layout.remotes / "vmm" / "kvm" / name] = with_interpreter((REPO / "vmm" / "kvm" / name).read_bytes(),
                                                                      python)
    return out


def with_interpreter(data: bytes, python: str) -> bytes:
    first, _, rest = data.partition(b"\n")
    if first.startswith(b"#!") and b"python" in first:
        return f"#!{python}\n".encode() + rest
    return data


def is_bash_driver(layout: Layout) -> bool:
    return (layout.remotes / "datastore" / DRIVER / "linstor_utils.sh").exists()


# ---- install and uninstall ------------------------------------------------------------------------
@dataclass
class Result:
    changed: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    backup_dir: Optional[Path] = None
    layout: Optional[Layout] = None


def show_diff(path: Path, old: str, new: str) -> None:
    shown = [ln.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
             for ln in difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                            f"{path} (now)", f"{path} (after)")]
    sys.stdout.writelines(ln if ln.endswith("\n") else ln + "\n" for ln in shown)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One install.py at a time on a front-end: an exclusive lock on the remotes directory (always
    there; nothing is created for it)."""
    try:
        fd = os.open(layout.remotes, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise InstallError(f"cannot open {layout.remotes}: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError(f"another install.py is running on this front-end (it holds the lock on "
                               f"{layout.remotes}): wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def install(args) -> Result:
    layout = find_layout(args)
    with locked(layout):
        undo_interrupted(layout, args.dry_run)
        return _install(args, layout)


def legacy_backups(layout: Layout) -> list[Path]:
    """What the first install.py left inside the remotes (which `onehost sync` copies to every
    host): `<file>.linstor_un-<stamp>.bak` beside each file it replaced, and the bash driver's
    directories as `linstor_un.bash-<stamp>.bak`."""
    found: list[Path] = []
    for sub in ("datastore", "tm"):
        found += sorted((layout.remotes / sub).glob(f"{DRIVER}.bash-*.bak"))
    for d in [*layout.driver_dirs, layout.remotes / "vmm" / "kvm", layout.conf_file.parent]:
        found += sorted(d.glob(f"*.{DRIVER}-*.bak")) if d.is_dir() else []
    return found


def move_legacy_backups(tx: Transaction, layout: Layout, state: dict) -> None:
    """Those backups go to install.py's backups, outside the remotes; the newest copy of the bash
    driver becomes what --restore-bash puts back."""
    bash: dict[str, str] = {}
    for path in legacy_backups(layout):
        dest = tx.move_away(path, f"legacy/{path.relative_to(layout.remotes)}")
        m = re.fullmatch(rf"(?:{DRIVER}\.bash-[0-9-]+\.bak)|(.+)\.{DRIVER}-[0-9-]+\.bak", path.name)
        if m and path.parent.name != DRIVER:
            original = path.parent / (m.group(1) or DRIVER)
            bash[str(original)] = str(dest)           # (sorted by stamp: the newest stays)
        print(f"moved {path} (left by an earlier install.py) to {dest}")
    if bash and not state.get("bash_driver"):
        state["bash_driver"] = bash


def _install(args, layout: Layout) -> Result:
    owner = owner_ids(args.owner)
    state = load_state(layout)
    legacy = bool(state.pop("legacy", None))  # what the older install.py added is taken over as recorded
    oned, execrc = TextFile.read(layout.oned_conf), TextFile.read(layout.vmm_execrc)
    oned_record = json.loads(json.dumps(state.get("oned", {})))
    execrc_record = json.loads(json.dumps(state.get("execrc", {})))
    new_oned, said_oned = patch_oned(oned, layout.version, oned_record)
    entries = [f"{s.get('NAME')}-{DRIVER}" for s in kvm_vm_mads(OnedConf(oned))] or [f"kvm-{DRIVER}"]
    new_execrc, said_execrc = patch_execrc(execrc, entries, execrc_record)
    files_at = driver_files(layout, "/PYTHON")            # paths only, for the permission check
    targets = [layout.oned_conf, layout.vmm_execrc, layout.conf_file, layout.state_file, *files_at]
    if not args.python:
        targets.append(layout.venv)
    if not args.dry_run:
        check_writable(targets)

    tx = Transaction(layout, owner, args.dry_run)
    result = Result(layout=layout, said=said_oned + said_execrc)
    try:
        tx.begin()
        python, venv_created = ensure_venv(tx, args, state)
        files = driver_files(layout, python)
        conf_new = not layout.conf_file.exists()
        bash = is_bash_driver(layout)
        if args.dry_run:
            return dry_run_report(args, layout, result, files, conf_new, bash,
                                  [(oned, new_oned), (execrc, new_execrc)])
        if legacy:
            move_legacy_backups(tx, layout, state)
        if bash:
            print("found the bash linstor_un driver: its files are moved to the backups, its linstor_un.conf "
                  "and oned.conf entries are kept")
            moved = {}
            for d in layout.driver_dirs:
                moved[str(d)] = str(tx.move_away(d, f"bash-driver/{d.parent.name}/{d.name}"))
            for name in VMM_FILES:
                f = layout.remotes / "vmm" / "kvm" / name
                if f.exists():
                    saved = tx.backup_path(f)
                    saved.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, saved)
                    moved[str(f)] = str(saved)
            state["bash_driver"] = moved
        for d in layout.driver_dirs:
            tx.makedirs(d)
        recorded = state.setdefault("files", {})
        for path, data in files.items():
            tx.write(path, data, 0o755)
            recorded[str(path)] = sha256(data)
        if conf_new:
            data = CONF_TEMPLATE.encode()
            tx.write(layout.conf_file, data)
            state["conf_created"] = sha256(data)
        tx.write(layout.oned_conf, oned.encode(new_oned))
        tx.write(layout.vmm_execrc, execrc.encode(new_execrc))
        created = venvs_created(state)
        if venv_created and str(layout.venv) not in created:
            created.append(str(layout.venv))
        state["venvs_created"] = created
        state.pop("venv_created", None)
        state.update({"venv": None if args.python else str(layout.venv), "version": list(layout.version),
                      "oned": oned_record, "execrc": execrc_record, "driver_version": driver_version(),
                      "dirs": sorted(set(state.get("dirs", [])) | {str(d) for d in tx.created_dirs})})
        if tx.backup_dir:
            state.setdefault("backups", []).append(str(tx.backup_dir))
        tx.write(layout.state_file, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode(), 0o600)
        tx.commit()
        if layout.legacy_state_file.exists():
            layout.legacy_state_file.unlink()
    except BaseException:
        tx.rollback()
        raise
    result.changed, result.backup_dir = [c for c in tx.changed if c != str(layout.state_file)], tx.backup_dir
    return result


def dry_run_report(args, layout, result, files, conf_new, bash, configs) -> Result:
    new_files = [p for p, data in files.items() if not p.exists() or p.read_bytes() != data]
    changed_configs = [(f, new) for f, new in configs if new != f.text]
    print("dry run: nothing is touched")
    for f, _ in changed_configs:
        print(f"would change {f.path}")
    for line in result.said:
        print(f"  {line}")
    if bash:
        print(f"would move the bash driver's files from {layout.remotes} to the backups")
    print(f"would write {len(new_files)} driver file(s) under {layout.remotes}"
          + (" (--show-files for their contents)" if new_files and not args.show_files else ""))
    if conf_new:
        print(f"would create {layout.conf_file}")
    for f, new in changed_configs:
        show_diff(f.path, f.text, new)
    if conf_new:
        show_diff(layout.conf_file, "", CONF_TEMPLATE)
    if args.show_files:
        for p in new_files:
            show_diff(p, p.read_text(errors="replace") if p.exists() else "",
                      files[p].decode(errors="replace"))
    result.changed = [str(f.path) for f, _ in changed_configs] + [str(p) for p in new_files] + \
        ([str(layout.conf_file)] if conf_new else [])
    return result


def uninstall(args) -> Result:
    layout = find_layout(args)
    with locked(layout):
        undo_interrupted(layout, args.dry_run)
        return _uninstall(args, layout)


def _uninstall(args, layout: Layout) -> Result:
    state = load_state(layout)
    oned, execrc = TextFile.read(layout.oned_conf), TextFile.read(layout.vmm_execrc)
    result = Result(layout=layout)
    bash_record = layout.state_dir / "bash-driver.json"
    if not state and args.restore_bash and bash_record.exists():
        return restore_bash(json.loads(bash_record.read_text()), bash_record, result)
    if not state:
        if any(d.exists() for d in layout.driver_dirs):
            raise InstallError(f"{DRIVER} files are in {layout.remotes} but no record of an install by install.py "
                               f"({layout.state_file}): not removing what install.py cannot prove it added")
        return result
    new_oned, said_oned = unpatch_oned(oned, state.get("oned", {}))
    new_execrc, said_execrc = unpatch_execrc(execrc, state.get("execrc", {}))
    result.said = said_oned + said_execrc
    remove: list[Path] = []
    for path in state.get("files", {}):
        remove.append(Path(path))
    conf = layout.conf_file
    if conf.exists() and state.get("conf_created") == sha256(conf.read_bytes()):
        remove.append(conf)
    # every venv an install made, also one a later run stopped using (--python, another --venv)
    remove += [Path(v) for v in venvs_created(state)]
    bash = state.get("bash_driver") or {}
    if args.restore_bash and not bash:
        raise InstallError("--restore-bash: this install did not replace a bash driver")
    if bash and not args.restore_bash:
        # the bash driver's own oned.conf entries (its save/restore overrides, its blocks) stay
        # after its files went: OpenNebula would call scripts that are not there any more
        raise InstallError("this install replaced the bash linstor_un driver, whose oned.conf entries are still "
                           "there: run `install.py --uninstall --restore-bash` to put its files back (or remove "
                           "its entries from oned.conf and vmm_execrc yourself, then delete "
                           f"{layout.state_file})")
    if state.get("legacy"):
        remove += [d for d in layout.driver_dirs] + [layout.remotes / "vmm" / "kvm" / n for n in VMM_FILES]
        state.setdefault("dirs", []).append(str(layout.conf_file.parent))        # (the first install.py made it)
    if not args.dry_run:
        check_writable([layout.oned_conf, layout.vmm_execrc] + [p.parent for p in remove])
    tx = Transaction(layout, owner_ids(args.owner), args.dry_run)
    if args.dry_run:
        print("dry run: nothing is touched")
        for line in result.said:
            print(f"  {line}")
        for p in remove:
            if p.exists():
                print(f"would remove {p}")
                tx.changed.append(str(p))
        for f, new in ((oned, new_oned), (execrc, new_execrc)):
            if new != f.text:
                tx.changed.append(str(f.path))
                show_diff(f.path, f.text, new)
        result.changed = tx.changed
        return result
    try:
        tx.begin()
        if state.get("legacy"):
            move_legacy_backups(tx, layout, state)
        tx.write(layout.oned_conf, oned.encode(new_oned))
        tx.write(layout.vmm_execrc, execrc.encode(new_execrc))
        # from here on the removal is completed, never undone: a run stopped in it is finished by
        # the next --uninstall (each step finds what is left)
        tx.commit()
    except BaseException:
        tx.rollback()
        raise
    for p in remove:
        tx.remove(p)
    layout.legacy_state_file.unlink(missing_ok=True)          # (in a directory the first install.py made)
    for d in sorted(state.get("dirs", []), key=len, reverse=True):
        try:
            Path(d).rmdir()
        except OSError:
            pass
    layout.state_file.unlink(missing_ok=True)
    bash = state.get("bash_driver") or {}                     # (the first install.py's backups of it, moved)
    result.changed, result.backup_dir = tx.changed, tx.backup_dir
    if args.restore_bash:
        restore_bash(bash, None, result)
    elif bash:
        bash_record.write_text(json.dumps(bash, indent=1) + "\n")
        print(f"the bash driver's files are kept in {layout.state_dir / 'backups'}: "
              f"`install.py --uninstall --restore-bash` puts them back")
    return result


def restore_bash(saved_at: dict, record: Optional[Path], result: Result) -> Result:
    for dest, saved in saved_at.items():
        if Path(saved).is_dir():
            shutil.copytree(saved, dest, symlinks=True, dirs_exist_ok=True)
        elif Path(saved).exists():
            shutil.copy2(saved, dest)
        else:
            raise InstallError(f"the backup {saved} of the bash driver's {dest} is gone")
        print(f"put back the bash driver's {dest}")
        result.changed.append(dest)
    if record:
        record.unlink()
    return result


def next_steps(layout: Layout) -> str:
    return f"""
Next steps:
  1. restart oned:        systemctl restart opennebula   (or: one stop; one start)
  2. push the remotes:    sudo -u oneadmin onehost sync --force
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
(OpenNebula {dotted(layout.version)}; see README for every attribute.)"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Install the linstor_un OpenNebula driver, or remove it.")
    p.add_argument("--version", action="version", version=f"linstor_un {driver_version()}")
    p.add_argument("--one-location", help="self-contained OpenNebula install (ONE_LOCATION)")
    p.add_argument("--etc", help="directory of oned.conf (default /etc/one)")
    p.add_argument("--remotes", help="remotes directory (default /var/lib/one/remotes)")
    p.add_argument("--venv", help="virtual environment for the library (default /usr/lib/one/linstor_un/venv)")
    p.add_argument("--state-dir", help="where install.py keeps its record and backups "
                                       "(default: linstor_un next to the remotes, /var/lib/one/linstor_un)")
    p.add_argument("--one-version", help="OpenNebula version (default: read from <remotes>/VERSION)")
    p.add_argument("--wheels", help="install the dependencies offline from this wheel directory")
    p.add_argument("--python", help="use this interpreter (it already has the library) instead of a venv")
    p.add_argument("--base-python", default=None,
                   help="interpreter that creates the venv (default /usr/bin/python3, which oneadmin can run)")
    p.add_argument("--system-site-packages", action="store_true", help="let the venv see system packages")
    p.add_argument("--no-deps", action="store_true", help="do not install dependencies into the venv")
    p.add_argument("--owner", help="owner of installed files, who must be able to run them (default oneadmin, "
                                   "if it exists)")
    p.add_argument("--dry-run", action="store_true", help="print what would change (summary and config hunks), "
                                                          "change nothing")
    p.add_argument("--show-files", action="store_true", help="with --dry-run: also the driver files' contents")
    p.add_argument("--uninstall", action="store_true", help="remove what install.py added")
    p.add_argument("--restore-bash", action="store_true", help="with --uninstall: put back the bash driver this "
                                                               "install replaced")
    args = p.parse_args(argv)
    if args.restore_bash and not args.uninstall:
        p.error("--restore-bash goes with --uninstall")
    args.base_python = str(absolute(args.base_python)) if args.base_python else default_base_python()
    return args


def os_failure(err: OSError) -> str:
    import errno
    where = err.filename or "a file"
    if err.errno == errno.ENOSPC:
        return f"no space left on the device of {where}"
    if err.errno == errno.EROFS:
        return f"{where} is on a read-only file system"
    if err.errno == errno.ENOTDIR:
        return f"a file stands where a directory should be, on the way to {where}"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to change {where}"
    return f"{where}: {err.strerror or err}"


class Stopped(BaseException):
    """SIGTERM or SIGHUP (a dropped SSH session): undone like a failure (SIGINT: KeyboardInterrupt)."""


def _stopped(signum, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv=None) -> int:
    args = parse_args(argv)
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        result = uninstall(args) if args.uninstall else install(args)
    except InstallError as err:
        print(f"install.py: {err}", file=sys.stderr)
        return 1
    except OSError as err:          # (what was written is undone by then)
        print(f"install.py: {os_failure(err)}; what this run changed was undone", file=sys.stderr)
        return 1
    except (Stopped, KeyboardInterrupt) as err:
        what = str(err) if isinstance(err, Stopped) else "SIGINT"
        print(f"install.py: stopped ({what}): "
              + ("the files removed so far stay removed; run --uninstall again to finish" if args.uninstall
                 else "what this run changed was undone"), file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not result.changed:
        print("nothing to change: linstor_un is " + ("not installed" if args.uninstall else "already installed"))
        return 0
    if args.dry_run:
        print(f"\n(dry run: {len(result.changed)} file(s) would change; nothing was touched)")
        return 0
    layout = result.layout
    if layout is None:                  # (install and uninstall always say where)
        return 0
    configs = {str(layout.oned_conf), str(layout.vmm_execrc), str(layout.conf_file)}
    print(("removed or changed" if args.uninstall else "changed") + f": {len(result.changed)} file(s)")
    for path in result.changed:
        if path in configs or not path.startswith(str(layout.remotes)):
            print(f"  {path}")
    for line in result.said:
        print(f"    {line}")
    others = [p for p in result.changed if p not in configs and p.startswith(str(layout.remotes))]
    if others:
        print(f"  {len(others)} driver file(s) under {layout.remotes}: "
              f"{', '.join(sorted({str(Path(p).parent.relative_to(layout.remotes)) for p in others}))}")
    if result.backup_dir:
        print(f"backups of what was replaced: {result.backup_dir}")
    if not args.uninstall:
        print(next_steps(layout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
