"""Helpers for TM action tests: images in LINSTOR with known bytes, VMs in oned."""
from __future__ import annotations

import os

import pytest

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS
from lab.oned import VM, Disk, History, Image

SYS = f"/var/lib/one//datastores/{SYSTEM_DS}"


def disk_path(vm_id: int, disk_id: int) -> str:
    return f"{SYS}/{vm_id}/disk.{disk_id}"


class Env:
    def __init__(self, lab):
        self.lab = lab
        self.r = lab.runner()

    def image(self, image_id: int, size_mb: int = 32, data: bytes = b"", persistent: bool = False,
              nodes: list = None) -> Image:
        """one-image-<id> spawned in the lab's resource group (or on `nodes`), holding `data` at 0 and 1 MiB."""
        import linstor
        name = f"one-image-{image_id}"
        with self.lab.client() as c:
            if nodes:
                c.resource_dfn_create(name)
                c.volume_dfn_create(name, size_mb * 1024)
                replies = c.resource_create([linstor.ResourceData(n, name, storage_pool="data") for n in nodes])
            else:
                replies = c.resource_group_spawn("one_rg", name, [size_mb * 1024])
            assert not any(r.is_error() for r in replies), [str(r) for r in replies]
            node = next(r.node_name for r in c.resource_list_raise(filter_by_resources=[name]).resources
                        if "DISKLESS" not in r.flags)
        if data:
            dev = f"/dev/drbd/by-res/{name}/0"
            self.lab.write_device(node, dev, data, 0)
            self.lab.write_device(node, dev, data, 1 << 20)
        img = Image(image_id, f"img{image_id}", IMAGE_DS, source=f"/dev/drbd/by-res/{name}/0", size=size_mb,
                    persistent=persistent)
        self.lab.oned.add(img)
        return img

    def save_as_target(self, image_id: int) -> Image:
        """The new image oned registers (LOCKED) before it calls DS mkfs and TM cpds for a save-as."""
        img = Image(image_id, f"saveas{image_id}", IMAGE_DS, source=f"/dev/drbd/by-res/one-image-{image_id}/0",
                    state=4)
        self.lab.oned.add(img)
        return img

    def save_as_volume(self, image_id: int, size_mb: int) -> Image:
        """A save-as as oned runs it from 6.0 on: the new image registered, then DS mkfs makes its
        (empty) volume; TM cpds comes next."""
        from lab.oned import to_xml
        from lab.runner import ds_action_data
        img = Image(image_id, f"saveas{image_id}", IMAGE_DS, source="", format="raw", size=size_mb, state=4)
        self.lab.oned.add(img)
        data = ds_action_data(to_xml(img.element()), to_xml(self.lab.oned.datastores[IMAGE_DS].element()))
        made = self.r.ds("mkfs", data, image_id)
        assert made.ok, str(made)
        img.source = made.stdout.split()[0]
        self.lab.oned.add(img)
        return img

    def vm(self, vm_id: int, disks: list[Disk], host: str = "node1", lcm: str = "PROLOG",
           state: str = "ACTIVE") -> VM:
        vm = VM(vm_id, state=state, lcm_state=lcm, disks=disks, history=[History(host, SYSTEM_DS)])
        self.lab.oned.add(vm)
        return vm

    def clone(self, img: Image, vm_id: int, disk_id: int, host: str = "node1"):
        return self.r.tm("clone", f"{FRONTEND}:{img.source}", f"{host}:{disk_path(vm_id, disk_id)}", vm_id,
                         IMAGE_DS)

    def read(self, host: str, path: str, offset: int = 0, length: int = 4096) -> bytes:
        return self.lab.read_device(host, path, offset, length)

    def rds(self) -> dict:
        with self.lab.client() as c:
            return {rd.name: rd.properties for rd in c.resource_dfn_list_raise().resource_definitions}

    def replicas(self, name: str) -> dict:
        with self.lab.client() as c:
            return {r.node_name: r.flags for r in c.resource_list_raise(filter_by_resources=[name]).resources}

    def link(self, host: str, path: str) -> str:
        out = self.lab.host(host).run_inside(f"readlink {path}", check=False)
        return out.stdout.decode().strip()


@pytest.fixture
def env(lab):
    return Env(lab)


PATTERN = os.urandom(4096)
