"""save_linstor_un / restore_linstor_un against real libvirt + QEMU domains in the lab."""
from __future__ import annotations

import pytest

from lab.lab import IMAGE_DS, SYSTEM_DS, Lab, LabConfig
from lab.oned import VM, Datastore, Disk, History, to_xml
from lab.runner import vmm_action_data

from tests.tm.conftest import PATTERN, Env, disk_path

DOMAIN = """<domain type='qemu'><name>one-{vm}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices><disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source dev='{path}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


@pytest.fixture(scope="module")
def venv():
    with Lab(LabConfig(hosts=2, libvirt=True)) as lab:
        yield Env(lab)


def boot(env, vm_id, host, path):
    h = env.lab.host(host)
    f = h.path("/var/lib/one/datastores") / f"dom-{vm_id}.xml"
    f.write_text(DOMAIN.format(vm=vm_id, path=path))
    h.run_inside(f"virsh -c qemu:///system create /var/lib/one/datastores/dom-{vm_id}.xml")


def state(env, host, vm_id) -> str:
    out = env.lab.host(host).run_inside(f"virsh -c qemu:///system domstate one-{vm_id}", check=False)
    return out.stdout.decode().strip() if out.returncode == 0 else "absent"


def vm_with_disk(env, vm_id, host="node1"):
    env.vm(vm_id, [Disk(0, SYSTEM_DS, size=16)], host=host, lcm="RUNNING")
    assert env.r.tm("mkimage", 16, "raw", f"{host}:{disk_path(vm_id, 0)}", vm_id, SYSTEM_DS).ok
    env.lab.write_device(host, disk_path(vm_id, 0), PATTERN)
    boot(env, vm_id, host, disk_path(vm_id, 0))
    assert state(env, host, vm_id) == "running"
    return env.lab.oned.vms[vm_id]


def data(env, vm, host, ds=SYSTEM_DS):
    return vmm_action_data(to_xml(vm.element()), to_xml(env.lab.oned.datastores[ds].element()), host,
                           f"one-{vm.id}", f"/var/lib/one//datastores/{ds}/{vm.id}/checkpoint")


def test_save_on_one_host_restore_on_another(venv):
    env = venv
    vm = vm_with_disk(env, 1)
    ckpt = f"/var/lib/one//datastores/{SYSTEM_DS}/1/checkpoint"
    result = env.r.save("one-1", ckpt, "node1", 1, data(env, vm, "node1"))
    assert result.ok, str(result)
    assert state(env, "node1", 1) == "absent"
    with env.lab.client() as c:
        vd = c.resource_dfn_list_raise(filter_by_resource_definitions=["one-vm-1-checkpoint"]).resource_definitions
        assert vd and vd[0].volume_definitions[0].size >= 64 * 1024       # at least the VM's memory
    # the VM's disk moves to node2 (cold migration), then it is restored there
    vm.lcm_state = "PROLOG_MIGRATE_SUSPEND"
    env.lab.oned.add(vm)
    assert env.r.tm("mv", f"node1:{disk_path(1, 0)}", f"node2:{disk_path(1, 0)}", 1, SYSTEM_DS).ok
    assert env.r.tm("mv", f"node1:/var/lib/one//datastores/{SYSTEM_DS}/1",
                    f"node2:/var/lib/one//datastores/{SYSTEM_DS}/1", 1, SYSTEM_DS).ok
    result = env.r.restore(ckpt, "node2", "one-1", 1, data(env, vm, "node2"))
    assert result.ok, str(result)
    assert state(env, "node2", 1) == "running"
    assert "one-vm-1-checkpoint" not in env.rds()
    env.lab.host("node2").run_inside("virsh -c qemu:///system destroy one-1")


def test_restore_into_another_system_datastore_rewrites_paths(venv):
    env = venv
    env.lab.oned.add(Datastore(102, "linstor_system2", "SYSTEM_DS", ds_mad="-", template=env.lab.datastore_template()))
    vm = vm_with_disk(env, 2)
    assert env.r.save("one-2", f"/var/lib/one//datastores/{SYSTEM_DS}/2/checkpoint", "node1", 2,
                      data(env, vm, "node1")).ok
    vm.lcm_state = "PROLOG_MIGRATE_SUSPEND"
    vm.history.append(History("node1", 102))
    env.lab.oned.add(vm)
    new_path = "/var/lib/one//datastores/102/2/disk.0"
    assert env.r.tm("mv", f"node1:{disk_path(2, 0)}", f"node1:{new_path}", 2, SYSTEM_DS).ok
    result = env.r.restore("/var/lib/one//datastores/102/2/checkpoint", "node1", "one-2", 2,
                           data(env, vm, "node1", ds=102))
    assert result.ok, str(result)
    xml = env.lab.host("node1").run_inside("virsh -c qemu:///system dumpxml one-2").stdout.decode()
    assert "/datastores/102/2/disk.0" in xml and f"/datastores/{SYSTEM_DS}/2/" not in xml
    env.lab.host("node1").run_inside("virsh -c qemu:///system destroy one-2")


def test_failed_save_keeps_the_vm_running_and_leaves_nothing(venv):
    env = venv
    vm = vm_with_disk(env, 3)
    ckpt = f"/var/lib/one//datastores/{SYSTEM_DS}/3/checkpoint"
    before = set(env.rds())
    env.lab.linstor.add_fault("/spawn$|/autoplace$", "rc", method="POST", ret_code=-4611686018407201820,
                              message="Not enough available nodes")
    result = env.r.save("one-3", ckpt, "node1", 3, data(env, vm, "node1"))
    env.lab.linstor.clear_faults()
    assert result.rc != 0 and "Not enough available nodes" in result.stderr
    assert state(env, "node1", 3) == "running" and set(env.rds()) == before
    # virsh save itself failing
    shim = env.lab.host("node1").path("/usr/local/bin") / "virsh"
    shim.write_text('#!/bin/sh\ncase " $* " in *" save "*) echo "injected failure: virsh save" >&2; exit 1;; esac\n'
                    'exec /usr/bin/virsh "$@"\n')
    shim.chmod(0o755)
    try:
        result = env.r.save("one-3", ckpt, "node1", 3, data(env, vm, "node1"))
    finally:
        shim.unlink()
    assert result.rc != 0 and "injected failure" in result.stderr
    assert state(env, "node1", 3) == "running" and set(env.rds()) == before
    assert env.r.save("one-3", ckpt, "node1", 3, data(env, vm, "node1")).ok     # and then it works
    assert env.r.restore(ckpt, "node1", "one-3", 3, data(env, vm, "node1")).ok
    assert state(env, "node1", 3) == "running"
    env.lab.host("node1").run_inside("virsh -c qemu:///system destroy one-3")


def test_other_system_datastores_go_to_the_stock_scripts(venv):
    env = venv
    env.lab.oned.add(Datastore(0, "system", "SYSTEM_DS", ds_mad="-", tm_mad="ssh", template={"TM_MAD": "ssh"}))
    vm = VM(4, history=[History("node1", 0, tm_mad="ssh")])
    env.lab.oned.add(vm)
    stock = env.lab.host("node1").path("/var/tmp/one") / "vmm" / "kvm"
    stock.mkdir(parents=True, exist_ok=True)
    for name in ("save", "restore"):
        (stock / name).write_text(f'#!/bin/sh\necho "$@" > /var/tmp/one/{name}.args\ncat > /var/tmp/one/{name}.in\n')
        (stock / name).chmod(0o755)
    xml = data(env, vm, "node1", ds=0)
    assert env.r.save("one-4", "/var/lib/one//datastores/0/4/checkpoint", "node1", 4, xml).ok
    args = (stock.parent.parent / "save.args").read_text().split()
    assert args == ["one-4", "/var/lib/one//datastores/0/4/checkpoint", "node1", "4", "node1"]
    assert (stock.parent.parent / "save.in").read_text() == xml       # decoded, as the host script reads it
    assert env.r.restore("/var/lib/one//datastores/0/4/checkpoint", "node1", "one-4", 4, xml).ok
    assert (stock.parent.parent / "restore.in").read_text() == xml


def test_a_fault_at_each_linstor_call_of_save_leaves_the_vm_running(venv):
    import re
    env = venv
    vm = vm_with_disk(env, 5)
    ckpt = f"/var/lib/one//datastores/{SYSTEM_DS}/5/checkpoint"
    mark = len(env.lab.linstor.requests())
    assert env.r.save("one-5", ckpt, "node1", 5, data(env, vm, "node1")).ok
    calls = [(r["method"], r["path"]) for r in env.lab.linstor.requests()[mark:]
             if r["method"] in ("POST", "PUT", "DELETE")]
    assert env.r.restore(ckpt, "node1", "one-5", 5, data(env, vm, "node1")).ok
    assert calls
    for index, (method, path) in enumerate(calls):
        before = set(env.rds())
        env.lab.linstor.add_fault(re.escape(path) + "$", "rc", method=method,
                                  skip=sum(1 for c in calls[:index] if c == (method, path)),
                                  ret_code=-4611686018427387102, message=f"injected at call {index}")
        result = env.r.save("one-5", ckpt, "node1", 5, data(env, vm, "node1"))
        env.lab.linstor.clear_faults()
        if result.ok:       # a cleanup refusal absorbed by its retry, or the mark set once the save was done
            assert method == "DELETE" or re.search(r"/resources/[^/]+$", path) or \
                (method == "PUT" and path.endswith("/one-vm-5-checkpoint"))
            assert env.r.restore(ckpt, "node1", "one-5", 5, data(env, vm, "node1")).ok
        else:
            assert f"injected at call {index}" in result.stderr
        assert state(env, "node1", 5) == "running", f"VM not running after a fault at {method} {path}"
        assert set(env.rds()) == before, f"left over after a fault at {method} {path}"
    env.lab.host("node1").run_inside("virsh -c qemu:///system destroy one-5")


def test_restore_without_a_checkpoint_volume_says_so(venv):
    env = venv
    vm = vm_with_disk(env, 7)
    ckpt = f"/var/lib/one//datastores/{SYSTEM_DS}/7/checkpoint"
    result = env.r.restore(ckpt, "node1", "one-7", 7, data(env, vm, "node1"))
    assert result.rc != 0
    assert "no checkpoint volume one-vm-7-checkpoint for VM 7" in result.stderr, result.stderr
    assert state(env, "node1", 7) == "running"
    env.lab.host("node1").run_inside("virsh -c qemu:///system destroy one-7")


def test_a_checkpoint_volume_of_another_incarnation_is_never_replaced_nor_restored(venv):
    """one-vm-8-checkpoint made for an earlier VM 8 (a restored oned database: another STIME):
    save refuses to replace it and the VM keeps running; restore refuses to load its memory into
    this VM. The other checkpoint stays as it was."""
    env = venv
    vm = vm_with_disk(env, 8)
    foreign = {"Aux/one/linstor_un/MADE_FOR": "vm 8 born 1600000000 checkpoint"}
    with env.lab.client() as c:
        c.resource_dfn_create("one-vm-8-checkpoint")
        c.volume_dfn_create("one-vm-8-checkpoint", 64 * 1024)
        c.resource_dfn_modify("one-vm-8-checkpoint", foreign)
    ckpt = f"/var/lib/one//datastores/{SYSTEM_DS}/8/checkpoint"
    result = env.r.save("one-8", ckpt, "node1", 8, data(env, vm, "node1"))
    assert not result.ok and "vm 8 born 1600000000 checkpoint" in result.stderr, str(result)
    assert state(env, "node1", 8) == "running"
    env.lab.host("node1").run_inside("virsh -c qemu:///system destroy one-8")
    result = env.r.restore(ckpt, "node1", "one-8", 8, data(env, vm, "node1"))
    assert not result.ok and "not restoring it" in result.stderr, str(result)
    assert state(env, "node1", 8) == "absent"
    assert env.rds()["one-vm-8-checkpoint"]["Aux/one/linstor_un/MADE_FOR"] == foreign["Aux/one/linstor_un/MADE_FOR"]
