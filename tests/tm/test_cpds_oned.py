"""TM cpds writes only the volume of the save-as oned has in progress: the disk oned flagged
HOTPLUG_SAVE_AS_ACTIVE, the image and snapshot it names, the image still LOCKED, and a volume
marked for that very image (its REGTIME): a CPDS line that disagrees changes nothing."""
from __future__ import annotations

from lab.lab import IMAGE_DS
from lab.oned import Image

from .conftest import PATTERN, disk_path
from .test_cpds import MADE_FOR, stopped_vm_with_disk

OTHER = b"K" * 4096             # what the volume cpds must not touch holds


def image_with_bytes(env, image_id: int, state: int, regtime: int = 0) -> Image:
    img = env.image(image_id, data=OTHER)
    img.state, img.regtime = state, regtime
    env.lab.oned.add(img)
    return img


def holds(env, image_id: int) -> bytes:
    res = f"one-image-{image_id}"
    node = next(n for n, f in env.replicas(res).items() if "DISKLESS" not in f)
    return env.lab.read_device(node, f"/dev/drbd/by-res/{res}/0")


def refused(result, *words):
    assert not result.ok, str(result)
    assert "nothing was changed" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def cpds(env, vm_id, image_id, snap=-1, **kw):
    return env.r.tm("cpds", f"node1:{disk_path(vm_id, 0)}", f"/dev/drbd/by-res/one-image-{image_id}/0", snap,
                    vm_id, IMAGE_DS, **kw)


def test_a_save_as_oned_does_not_have_in_progress_is_refused(env):
    stopped_vm_with_disk(env, 130, 1300)
    image_with_bytes(env, 1301, state=4)
    refused(cpds(env, 130, 1301, oned_saveas=False), "oned has no save-as of VM 130")
    assert holds(env, 1301) == OTHER


def test_argv_naming_another_image_than_oneds_save_as_is_refused(env):
    """oned saves disk 0 as image 1311; the line names image 1312 (a READY image's volume)."""
    stopped_vm_with_disk(env, 131, 1310)
    image_with_bytes(env, 1311, state=4)
    image_with_bytes(env, 1312, state=1)
    vm = env.lab.oned.vms[131]
    vm.disks[0].extra.update({"HOTPLUG_SAVE_AS_ACTIVE": "YES", "HOTPLUG_SAVE_AS": "1311",
                              "HOTPLUG_SAVE_AS_SOURCE": "/dev/drbd/by-res/one-image-1311/0",
                              "HOTPLUG_SAVE_AS_SNAPSHOT_ID": "-1"})
    refused(cpds(env, 131, 1312, oned_saveas=False), "as image 1311", "one-image-1312")
    assert holds(env, 1312) == OTHER
    # nor another snapshot than the one oned saves
    refused(cpds(env, 131, 1311, snap=0, oned_saveas=False), "itself")


def test_an_image_that_is_not_being_made_is_never_written(env):
    """A READY image whose id the line names (oned flags the disk, but its image is done)."""
    stopped_vm_with_disk(env, 132, 1320)
    image_with_bytes(env, 1321, state=1)
    refused(cpds(env, 132, 1321), "image 1321 is not being made", "state 1")
    assert holds(env, 1321) == OTHER


def test_an_earlier_incarnations_volume_is_not_this_images(env):
    """The volume carries the mark of image 1331 registered at another time (an image of that id
    deleted while its volume stayed, the id given again): not the new image's volume."""
    stopped_vm_with_disk(env, 133, 1330)
    image_with_bytes(env, 1331, state=4, regtime=1700000000)
    with env.lab.client() as c:
        c.resource_dfn_modify("one-image-1331", {MADE_FOR: "image 1331 born 1600000000"})
    refused(cpds(env, 133, 1331), "image 1331 born 1600000000", "not the new image 1331's volume")
    assert holds(env, 1331) == OTHER
    assert env.rds()["one-image-1331"][MADE_FOR] == "image 1331 born 1600000000"


def test_the_save_as_oned_asked_for_is_made(env):
    stopped_vm_with_disk(env, 134, 1340)
    image_with_bytes(env, 1341, state=4)
    result = cpds(env, 134, 1341)
    assert result.ok, str(result)
    assert holds(env, 1341) == PATTERN
