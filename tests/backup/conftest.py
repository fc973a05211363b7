"""A lab with an rsync-style backup datastore next to the linstor_un ones."""
from __future__ import annotations

import pytest

from lab.backup_ds import BackupDatastore
from lab.lab import FRONTEND, IMAGE_DS, Lab, LabConfig
from lab.oned import Disk

from tests.tm.conftest import Env, disk_path


class BackupEnv(Env):
    def __init__(self, lab):
        super().__init__(lab)
        self.bds = BackupDatastore(lab)

    def vm_with_disks(self, vm_id: int, sizes=(32, 16), host: str = "node1", mode: str = "INCREMENT",
                      **config) -> object:
        """Disk 0 a clone of an image, disk 1 a persistent image; BACKUP_CONFIG as given."""
        base, pers = 100 + vm_id * 2, 101 + vm_id * 2
        img0 = self.image(base, sizes[0], data=b"OS" * 2048)
        img1 = self.image(pers, sizes[1], persistent=True)
        vm = self.vm(vm_id, [Disk(0, IMAGE_DS, image_id=base, source=img0.source, size=sizes[0]),
                             Disk(1, IMAGE_DS, image_id=pers, source=img1.source, size=sizes[1], persistent=True)],
                     host=host, lcm="RUNNING")
        assert self.clone(img0, vm_id, 0, host).ok
        assert self.r.tm("ln", f"{FRONTEND}:{img1.source}", f"{host}:{disk_path(vm_id, 1)}", vm_id, IMAGE_DS).ok
        vm.backup_config = {"MODE": mode, "LAST_INCREMENT_ID": -1, "FS_FREEZE": "NONE", **config}
        return vm

    def size(self, host: str, path: str) -> int:
        return int(self.lab.host(host).run_inside(f"blockdev --getsize64 $(readlink -f {path})").stdout)

    def disk_bytes(self, vm, disk_id: int, host: str = "node1") -> bytes:
        path = disk_path(vm.id, disk_id)
        return self.read(host, path, 0, self.size(host, path))

    def write(self, vm, disk_id: int, data: bytes, offset: int, host: str = "node1") -> None:
        self.lab.write_device(host, disk_path(vm.id, disk_id), data, offset)

    def snapshots(self, res: str) -> set[str]:
        with self.lab.client() as c:
            return {s.name for s in c.snapshot_dfn_list_raise(filter_by_resources=[res]).snapshots}


@pytest.fixture(scope="module")
def benv():
    with Lab(LabConfig(hosts=2)) as lab:
        yield BackupEnv(lab)
