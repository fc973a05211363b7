"""Calling conventions of 5.x/6.x, the error format of each era, and every action run twice."""
from __future__ import annotations

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS
from lab.oned import Disk, History, to_xml
from lab.runner import ds_action_data

from .conftest import PATTERN, SYS, disk_path


def ok(result):
    assert result.ok, str(result)
    return result


def test_error_format_per_version(env):
    bad = ["8", "raw", "node1:/not/a/datastore/path", "5", str(SYSTEM_DS)]
    v5 = env.lab.runner("5.12.0").tm("mkimage", *bad)
    assert v5.rc != 0 and "ERROR MESSAGE --8<------" in v5.stderr and "ERROR MESSAGE ------>8--" in v5.stderr
    v6 = env.lab.runner("6.4.0").tm("mkimage", *bad)
    assert v6.rc != 0 and v6.stderr.count("\n") == 1 and "invalid system datastore path" in v6.stderr
    v7 = env.lab.runner("7.0.2").tm("mkimage", *bad)
    lines = [line for line in v7.stderr.splitlines()
             if not line.startswith(("INFO:", "ERROR:", "DEBUG:", "WARN:"))]
    assert lines == ["invalid system datastore path '/not/a/datastore/path'"]


def test_migration_hooks_with_the_5_8_template_in_argv(env):
    img = env.image(11, data=PATTERN)
    vm = env.vm(12, [Disk(0, IMAGE_DS, image_id=11, source=img.source, size=32)], lcm="RUNNING")
    ok(env.clone(img, 12, 0))
    r58 = env.lab.runner("5.8.0")
    xml = to_xml(vm.element())
    ok(r58.migrate("premigrate", "node1", "node2", f"{SYS}/12", 12, SYSTEM_DS, xml))
    assert env.read("node2", disk_path(12, 0)) == PATTERN
    ok(r58.migrate("postmigrate", "node1", "node2", f"{SYS}/12", 12, SYSTEM_DS, xml))
    assert env.lab.host("node1").run_inside(f"test -e {SYS}/12", check=False).returncode != 0


def test_monitor_before_5_12_prints_poll_lines(env):
    env.vm(13, [Disk(0, SYSTEM_DS, size=8)])
    ok(env.r.tm("mkimage", 8, "raw", f"node1:{disk_path(13, 0)}", 13, SYSTEM_DS))
    env.lab.write_device("node1", disk_path(13, 0), PATTERN * 512)       # 2 MiB of data
    data = ds_action_data("", to_xml(env.lab.oned.datastores[SYSTEM_DS].element()))
    for version in ("5.6.0", "5.10.0"):
        out = ok(env.lab.runner(version).tm_monitor(data, SYSTEM_DS)).stdout
        assert out.startswith("USED_MB=")
        vm_line = [line for line in out.splitlines() if line.startswith("VM=")]
        assert vm_line == ['VM=[ID=13,POLL="DISK_SIZE=[ID=0,SIZE=2] "]']


def test_every_action_twice(env):
    img = env.image(14, data=PATTERN)
    pimg = env.image(15, data=PATTERN, persistent=True)
    vm = env.vm(16, [Disk(0, IMAGE_DS, image_id=14, source=img.source, size=32),
                     Disk(1, IMAGE_DS, image_id=15, source=pimg.source, size=32, persistent=True),
                     Disk(2, SYSTEM_DS, type="swap", size=8)])
    ctx = env.lab.workdir / "ctx.sh"
    ctx.write_text("X=1\n")
    r = env.r
    steps = [
        ("clone", f"{FRONTEND}:{img.source}", f"node1:{disk_path(16, 0)}", 16, IMAGE_DS),
        ("ln", f"{FRONTEND}:{pimg.source}", f"node1:{disk_path(16, 1)}", 16, IMAGE_DS),
        ("mkswap", 8, f"node1:{disk_path(16, 2)}", 16, SYSTEM_DS),
        ("context", str(ctx), f"node1:{disk_path(16, 3)}", 16, SYSTEM_DS),
        ("snap_create", f"node1:{disk_path(16, 0)}", 0, 16, IMAGE_DS),
        ("resize", f"node1:{disk_path(16, 0)}", 64, 16, IMAGE_DS),
        ("snap_revert", f"node1:{disk_path(16, 0)}", 0, 16, IMAGE_DS),
        ("snap_delete", f"node1:{disk_path(16, 0)}", 0, 16, IMAGE_DS),
    ]
    for action, *args in steps:
        ok(r.tm(action, *args))
        first = (env.rds(), env.link("node1", disk_path(16, 0)))
        ok(r.tm(action, *args))
        assert (env.rds(), env.link("node1", disk_path(16, 0))) == first, action
    vm.lcm_state = "PROLOG_MIGRATE_POWEROFF"
    env.lab.oned.add(vm)
    for d in range(3):
        ds = IMAGE_DS if d < 2 else SYSTEM_DS
        for _ in range(2):
            ok(r.tm("mv", f"node1:{disk_path(16, d)}", f"node2:{disk_path(16, d)}", 16, ds))
    for _ in range(2):
        ok(r.tm("mv", f"node1:{SYS}/16", f"node2:{SYS}/16", 16, SYSTEM_DS))
    assert env.read("node2", disk_path(16, 0)) == PATTERN
    vm.history.append(History("node2", SYSTEM_DS))
    vm.lcm_state = "EPILOG"
    env.lab.oned.add(vm)
    for _ in range(2):
        ok(r.tm("mvds", f"node2:{disk_path(16, 1)}", pimg.source, 16, IMAGE_DS))
        ok(r.tm("delete", f"node2:{disk_path(16, 0)}", 16, IMAGE_DS))
        ok(r.tm("delete", f"node2:{disk_path(16, 2)}", 16, SYSTEM_DS))
        ok(r.tm("delete", f"node2:{SYS}/16", 16, SYSTEM_DS))
    assert sorted(env.rds()) == ["one-image-14", "one-image-15"]
