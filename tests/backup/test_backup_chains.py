"""An increment continues the chain oned continues, or holds the whole disk: never a smaller one
built on another chain's base snapshot or digests. oned restarts increment numbers at 0 whenever a
chain is reset, so after an oned database restore, on a second front-end or with a restored
/var/lib/one the numbers may name a snapshot or digests of another chain. Each case backs up,
restores the chain and compares with the disk."""
from __future__ import annotations

import copy
import shutil

from lab.lab import Lab, LabConfig

from tests.backup.conftest import BackupEnv
from tests.backup.test_backups import backed_up, scattered

MiB = 1 << 20


def oned_state(env, vm) -> tuple:
    """What an oned database backup holds of this VM's backups: its BACKUP_CONFIG and images."""
    images = {i: copy.deepcopy(env.lab.oned.images[i]) for i in vm.backup_ids}
    return copy.deepcopy(vm.backup_config), list(vm.backup_ids), images


def restore_oned(env, vm, state) -> None:
    config, ids, images = state
    vm.backup_config, vm.backup_ids = copy.deepcopy(config), list(ids)
    for image in images.values():
        env.lab.oned.add(copy.deepcopy(image))
    env.lab.oned.add(vm)


def reset_chain(vm) -> None:
    """As `onevm backup --reset` (or a disk attach): the next backup starts a new chain at 0."""
    vm.backup_config.update(LAST_INCREMENT_ID=-1, INCREMENTAL_BACKUP_ID=-1)


def assert_restores(env, vm, run, disks=(0,)) -> None:
    for d in disks:
        assert env.bds.restored_bytes(run.image_id, d, run.increment) == env.disk_bytes(vm, d), (run.increment, d)


def test_after_an_oned_database_restore_the_same_numbers_of_another_chain_are_not_a_base():
    with Lab(LabConfig(hosts=2)) as lab:
        env = BackupEnv(lab)
        vm = env.vm_with_disks(30)
        backed_up(env, vm, disks=(0,))                                     # chain A: 0
        scattered(env, vm, 0, 6, 32, 10)
        backed_up(env, vm, disks=(0,))                                     # chain A: 1
        saved = oned_state(env, vm)                                        # the database backup
        scattered(env, vm, 0, 6, 32, 11)
        reset_chain(vm)
        backed_up(env, vm, disks=(0,))                                     # chain B: 0
        env.write(vm, 0, b"B" * 4096, 3 * MiB)
        backed_up(env, vm, disks=(0,))                                     # chain B: 1 (same number)
        restore_oned(env, vm, saved)                                       # oned goes back to chain A, 1
        env.write(vm, 0, b"C" * 4096, 9 * MiB)
        run = backed_up(env, vm, disks=(0,))                               # chain A: 2
        assert run.increment == 2
        assert_restores(env, vm, run)
        assert "not the base oned continues" in run.pre.stderr, run.pre.stderr


def test_digests_of_another_chain_are_not_used():
    """A second front-end (or a /var/lib/one restored from a file backup) holds digests of the
    same VM, disk and increment number from another chain: the base snapshot is read instead.
    A block that chain held, changed since and changed back, would otherwise be left out."""
    with Lab(LabConfig(hosts=2)) as lab:
        env = BackupEnv(lab)
        vm = env.vm_with_disks(31)
        env.write(vm, 0, b"X" * 65536, 1 * MiB)
        backed_up(env, vm, disks=(0,))                                     # chain A: 0
        scattered(env, vm, 0, 6, 32, 20)
        env.write(vm, 0, b"X" * 65536, 1 * MiB)
        backed_up(env, vm, disks=(0,))                                     # chain A: 1 (X at 1 MiB)
        digests = env.lab.one_location / "var" / "linstor_un" / "digests"     # (backup_chain.state_dir)
        assert digests.is_dir()
        other_frontend = env.lab.workdir / "frontend2-digests"
        shutil.copytree(digests, other_frontend)
        env.write(vm, 0, b"Y" * 65536, 1 * MiB)
        reset_chain(vm)
        backed_up(env, vm, disks=(0,))                                     # chain B: 0 (Y)
        env.write(vm, 0, b"B" * 70000, 5 * MiB)
        backed_up(env, vm, disks=(0,))                                     # chain B: 1 (Y)
        shutil.rmtree(digests)
        shutil.copytree(other_frontend, digests)                           # the other front-end takes over
        env.write(vm, 0, b"X" * 65536, 1 * MiB)                            # X again, as in chain A's digests
        run = backed_up(env, vm, disks=(0,))                               # chain B: 2
        assert run.increment == 2
        assert_restores(env, vm, run)
        assert "reading linstor_un-backup-31-1 too" in run.pre.stderr, run.pre.stderr


def test_a_base_taken_by_an_older_linstor_un_gives_a_whole_increment():
    """A base snapshot without an identity (taken before it existed) cannot be matched with oned's
    record: the increment holds the whole disk once, and the chain goes on from it."""
    with Lab(LabConfig(hosts=2)) as lab:
        env = BackupEnv(lab)
        vm = env.vm_with_disks(32)
        backed_up(env, vm, disks=(0,))
        res, snap = "one-vm-32-disk-0", "linstor_un-backup-32-0"
        token = "Aux/one/linstor_un/SNAPSHOT/" + snap
        with lab.client() as c:                   # taken again as an older linstor_un took it
            value = c.snapshot_dfn_list_raise(filter_by_resources=[res]).snapshots[0].data_v1["props"][token]
            c.snapshot_delete(res, snap)
            c.resource_dfn_modify(res, {token: value})
            c.snapshot_create(None, res, snap)
            c.resource_dfn_modify(res, {}, delete_props=[token])
        scattered(env, vm, 0, 4, 32, 30)
        run = backed_up(env, vm, disks=(0,))
        assert_restores(env, vm, run)
        assert "carries no chain identity" in run.pre.stderr, run.pre.stderr
        env.write(vm, 0, b"N" * 4096, 11 * MiB)
        run = backed_up(env, vm, disks=(0,))                               # and on from it
        assert "not the base" not in run.pre.stderr and "no digests" not in run.pre.stderr, run.pre.stderr
        assert_restores(env, vm, run)
