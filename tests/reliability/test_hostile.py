"""Hostile input: datastore attributes, argv fields and image fields holding shell metacharacters,
newlines, spaces, very long strings, path traversal and names LINSTOR would refuse. No command
beyond the intended ones may run (marker files on the front-end and every host), and each run ends
with a clear one-line error leaving the state before, or is handled correctly."""
from __future__ import annotations

from pathlib import Path

from lab.lab import IMAGE_DS, SYSTEM_DS
from lab.oned import Disk, Image, to_xml
from lab.runner import ds_action_data

from tests.tm.conftest import disk_path

from .conftest import image_file, state

MARKER = "/tmp/linstor_un-pwned"


def hostile_values(tag: str) -> list[str]:
    m = f"{MARKER}-{tag}"
    return [f"x;touch {m} $(touch {m}) `touch {m}` | touch {m} && touch {m}",
            f"node1\ntouch {m}",
            "a" * 5000,
            "../../../../etc/passwd",
            "has space/and slash:colon' quote\"",
            "ünïcödé-ñame",
            "-rf --help"]


def markers(env) -> list[str]:
    found = [str(p) for p in Path("/tmp").glob("linstor_un-pwned*")]
    for host in env.lab.node_names:
        out = env.lab.host(host).run_inside("ls /tmp /var/tmp/one /var/lib/one/datastores 2>/dev/null | "
                                            "grep linstor_un-pwned", check=False)
        found += [f"{host}:{x}" for x in out.stdout.decode().split()]
    return found


def judge(env, result, before, what: str, sc=None) -> str:
    assert not markers(env), f"{what}: a command ran that should not have"
    if sc is not None:
        sc.outcome("handled" if result.ok else "refused")
    if result.ok:
        return "handled"
    errors = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("INFO")]
    assert len(errors) == 1 and errors[0].strip(), f"{what}: not one clear line:\n{result.stderr}"
    assert state(env) == before, f"{what}: a failed run changed the state"
    return "refused"


ATTRIBUTES = ["LS_CONTROLLERS", "LS_CERTFILE", "LS_KEYFILE", "LS_CAFILE", "RESOURCE_GROUP", "NODE_LIST",
              "REPLICA_COUNT", "AUTO_PLACE", "STORAGE_POOL", "DISKLESS_POOL", "LAYER_LIST", "PROVIDERS",
              "REPLICAS_ON_SAME", "REPLICAS_ON_DIFFERENT", "DO_NOT_PLACE_WITH", "DO_NOT_PLACE_WITH_REGEX",
              "PREFER_NODE", "ENCRYPTION", "CLONE_MODE", "CHECKPOINT_REPLICA_COUNT", "BRIDGE_LIST", "STAGING_DIR"]


def test_hostile_datastore_attributes(renv, scenario):
    env = renv
    sc = scenario("hostile datastore attributes (22 attributes x 7 values) on mkimage, 4 of them on DS cp too",
                  "no marker file on the front-end or any host; a one-line error and the state before, "
                  "or correct handling")
    src = image_file(env, "hostile-images", 1)
    outcomes = {"handled": 0, "refused": 0}
    vm = 400
    for attr in ATTRIBUTES:
        for value in hostile_values(attr.lower()):
            sc.run()
            vm += 1
            for ds in (SYSTEM_DS, IMAGE_DS):
                env.lab.oned.datastores[ds].template[attr] = value
            env.lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(src.parent)
            try:
                env.vm(vm, [Disk(0, SYSTEM_DS, size=8)])
                before = state(env)
                result = env.r.tm("mkimage", 8, "raw", f"node1:{disk_path(vm, 0)}", vm, SYSTEM_DS)
                outcomes[judge(env, result, before, f"{attr}={value[:40]!r} mkimage", sc)] += 1
                if attr in ("BRIDGE_LIST", "STAGING_DIR", "LS_CONTROLLERS", "NODE_LIST"):
                    sc.run()
                    before = state(env)
                    data = ds_action_data(to_xml(Image(vm, "a", IMAGE_DS, path=str(src), size=1,
                                                       format="qcow2" if attr == "STAGING_DIR" else "raw").element()),
                                          to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
                    result = env.r.ds("cp", data, vm)
                    outcomes[judge(env, result, before, f"{attr}={value[:40]!r} cp", sc)] += 1
            finally:
                for ds in (SYSTEM_DS, IMAGE_DS):
                    env.lab.oned.datastores[ds].template.pop(attr, None)
                deterministic_reset(env)
    assert outcomes["refused"] > 0


def deterministic_reset(env) -> None:
    for ds in (IMAGE_DS, SYSTEM_DS):
        env.lab.oned.datastores[ds].template.update(RESOURCE_GROUP="", NODE_LIST="node2 node3", STORAGE_POOL="data",
                                                    LS_CONTROLLERS=env.lab.linstor.url)
        for attr in ("BRIDGE_LIST", "STAGING_DIR", "LS_CERTFILE", "LS_KEYFILE", "LS_CAFILE"):
            env.lab.oned.datastores[ds].template.pop(attr, None)


def test_hostile_arguments_and_image_fields(renv, scenario):
    env = renv
    sc = scenario("hostile argv fields (TM clone/ln/mkimage/delete/mv/snap_create) and image fields "
                  "(DS cp PATH, mkfs FS/FORMAT, rm SOURCE)",
                  "no marker file anywhere; a one-line error and the state before")
    deterministic_reset(env)
    env.vm(450, [Disk(0, SYSTEM_DS, size=8)])
    good_dst = f"node1:{disk_path(450, 0)}"
    tm_cases = []
    for i, v in enumerate(hostile_values("argv")):
        tm_cases += [
            ("mkimage", ["8", "raw", f"node1:{disk_path(450, 0)}{v}", "450", str(SYSTEM_DS)]),
            ("mkimage", ["8", "raw", f"{v}:{disk_path(450, 0)}", "450", str(SYSTEM_DS)]),
            ("mkimage", [f"8{v}", "raw", good_dst, "450", str(SYSTEM_DS)]),
            ("mkimage", ["8", v, good_dst, "450", str(SYSTEM_DS)]),
            ("mkimage", ["8", "raw", good_dst, f"450{v}", str(SYSTEM_DS)]),
            ("clone", [f"one-frontend:/dev/drbd/by-res/one-image-1{v}/0", good_dst, "450", str(IMAGE_DS)]),
            ("ln", [f"one-frontend:{v}", good_dst, "450", str(IMAGE_DS)]),
            ("delete", [f"node1:{disk_path(450, 0)}/{v}", "450", str(SYSTEM_DS)]),
            ("mv", [good_dst, f"node2:{v}", "450", str(SYSTEM_DS)]),
            ("snap_create", [good_dst, v, "450", str(SYSTEM_DS)]),
        ]
    for action, args in tm_cases:
        sc.run()
        before = state(env)
        judge(env, env.r.tm(action, *args), before, f"{action} {args!r:.80}", sc)

    images = env.lab.workdir / "hostile-images2"
    images.mkdir(exist_ok=True)
    env.lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(images)
    for i, v in enumerate(hostile_values("image")):
        for action, image in (("cp", Image(460 + i, "x", IMAGE_DS, path=str(images / v) if "/" not in v else v,
                                           size=1)),
                              ("mkfs", Image(470 + i, "x", IMAGE_DS, fs=v, format="raw", size=8, type=2)),
                              ("mkfs", Image(480 + i, "x", IMAGE_DS, format=v, size=8, type=2)),
                              ("rm", Image(490 + i, "x", IMAGE_DS, source=f"/dev/drbd/by-res/{v}/0", size=8)),
                              ("snap_delete", Image(490 + i, "x", IMAGE_DS, source="/dev/drbd/by-res/one-image-1/0",
                                                    size=8, target_snapshot=v)),        # type: ignore[arg-type]
                              ("snap_delete", Image(490 + i, "x", IMAGE_DS, source="/dev/drbd/by-res/one-image-1/0",
                                                    size=8, target_snapshot=-1))):       # no target: refused
            sc.run()
            before = state(env)
            data = ds_action_data(to_xml(image.element()), to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
            result = env.r.ds(action, data, image.id)
            judge(env, result, before, f"{action} {v[:40]!r}", sc)
