"""VM disk monitoring never fails as a whole because of one odd object (no LINSTOR needed)."""
import io

from linstor_un import monitoring
from linstor_un.linstor_api import Replica, ResourceDef
from linstor_un.validate import natural
from linstor_un.report import Report


class FakeLinstor:
    def __init__(self, rds):
        self.rds = rds

    def resource_definitions(self, props=None, sizes=True):
        return self.rds

    def replicas_of(self, names):
        return {n: [Replica(n, "node1", [], {}, False, "/dev/x", "LVM_THIN", "data", 2048 * 1024)] for n in names}


def rd(name, vm, disk, **extra):
    return ResourceDef(name, {"Aux/one/VM_ID": vm, "Aux/one/DISK_ID": disk, "Aux/one/DS_ID": "101", **extra},
                       "one_rg", 0)


def test_odd_properties_are_skipped_and_logged_and_a_disk_is_reported_once():
    api = FakeLinstor([rd("one-vm-5-disk-0", "5", "0", **{"Aux/one/SNAPSHOT_0/DISK_SIZE": "1048576"}),
                       rd("odd-superscript", "\u00b2", "0"), rd("odd-arabic", "\u0663", "0"),
                       rd("odd-empty", "", "1"), rd("odd-negative", "-1", "0"),
                       rd("one-vm-5-disk-0-copy", "5", "0"),                      # claims the same disk
                       rd("one-vm-6-disk-1", "6", "1", **{"Aux/one/SNAPSHOT_3/DISK_SIZE": "\u00b2"})])
    log = io.StringIO()
    sizes = monitoring.vm_disk_sizes(api, 101, Report("monitor", (7, 0, 0), stream=log))
    assert sizes == {5: ["DISK_SIZE=[ID=0,SIZE=2048]", "SNAPSHOT_SIZE=[ID=0,DISK_ID=0,SIZE=1024]"],
                     6: ["DISK_SIZE=[ID=1,SIZE=2048]"]}
    logged = log.getvalue()
    for name in ("odd-superscript", "odd-arabic", "odd-empty", "odd-negative", "one-vm-5-disk-0-copy"):
        assert name in logged


def test_natural_takes_ascii_digits_only():
    assert natural("42") == 42 and natural("0") == 0
    for bad in ("\u00b2", "\u0663", "", "-1", "1.0", " 1", "1" * 19):
        assert natural(bad) is None, bad
