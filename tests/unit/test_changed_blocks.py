"""thin_delta's answer mapped onto the backup's 64 KiB blocks, for any pool chunk size."""
from __future__ import annotations

import pytest

from linstor_un.changed_blocks import NoAnswer, Run, runs

K = 1024
BLOCK = 64 * K


def delta(chunk_kib: int, *items: tuple[str, int, int]) -> str:
    body = "".join(f'<{tag} begin="{b}" length="{n}"/>' for tag, b, n in items)
    return (f'<superblock uuid="" time="1" transaction="1" data_block_size="{chunk_kib * 2}" nr_data_blocks="9">'
            f'<diff left="1" right="2">{body}</diff></superblock>')


def test_chunks_the_size_of_a_block():
    got = runs(delta(64, ("same", 0, 2), ("different", 2, 3), ("left_only", 5, 1), ("right_only", 6, 1)),
               16 * BLOCK, BLOCK)
    assert got == [Run(2, 3, "d"), Run(5, 1, "z"), Run(6, 1, "d")]


def test_a_chunk_of_four_blocks_is_four_blocks():
    got = runs(delta(256, ("different", 1, 1), ("left_only", 3, 1)), 32 * BLOCK, BLOCK)
    assert got == [Run(4, 4, "d"), Run(12, 4, "z")]


def test_what_lies_past_the_disk_is_left_out():
    """DRBD's metadata at the end of the volume; and a disk that ends inside a chunk."""
    got = runs(delta(1024, ("different", 0, 1), ("right_only", 1, 4)), 20 * BLOCK, BLOCK)
    assert got == [Run(0, 20, "d")]
    assert runs(delta(64, ("different", 100, 5)), 16 * BLOCK, BLOCK) == []


@pytest.mark.parametrize("text", ["<notxml", '<superblock data_block_size="0"><diff/></superblock>',
                                  '<superblock data_block_size="128"></superblock>',
                                  '<superblock data_block_size="128"><diff><odd begin="0" length="1"/></diff>'
                                  '</superblock>'])
def test_an_answer_that_does_not_add_up_is_no_answer(text):
    with pytest.raises(NoAnswer):
        runs(text, 16 * BLOCK, BLOCK)


class Pools:
    """A stand-in for Linstor's replicas and storage pools."""

    def __init__(self, replicas, props=None):
        self._replicas = replicas
        self._props = props if props is not None else {"StorDriver/LvmVg": "vg", "StorDriver/ThinPool": "tp"}

    def replicas(self, name):
        return self._replicas

    def storage_pools(self, nodes=None, pools=None):
        from linstor_un.linstor_api import StoragePool
        return [StoragePool(r.node, r.pool, r.provider, 100, 50, dict(self._props)) for r in self._replicas]


def replica(node, provider="LVM_THIN", layers=("DRBD", "STORAGE"), flags=()):
    from linstor_un.linstor_api import Replica
    return Replica("r", node, list(flags), {}, False, "/dev/drbd1000", provider, "data", 0, 0, tuple(layers))


@pytest.mark.parametrize("replicas,nodes,why", [
    ([replica("a", "ZFS_THIN"), replica("b", "ZFS_THIN")], ["a", "b"], "not LVM_THIN"),
    ([replica("a", "FILE_THIN")], ["a"], "not LVM_THIN"),
    ([replica("a", layers=("DRBD", "LUKS", "STORAGE"))], ["a"], "layers are DRBD,LUKS,STORAGE"),
    ([replica("a"), replica("c", "DISKLESS", (), ["DISKLESS"])], ["b"], "no node holds the disk and both"),
    ([replica("c", "DISKLESS", (), ["DISKLESS"])], ["c"], "has no disk"),
])
def test_where_the_pool_cannot_answer(replicas, nodes, why):
    from linstor_un.changed_blocks import thin_pool_holding
    with pytest.raises(NoAnswer, match=why):
        thin_pool_holding(Pools(replicas), "r", nodes)


def test_the_pool_of_a_node_holding_both_snapshots():
    from linstor_un.changed_blocks import ThinPool, thin_pool_holding
    assert thin_pool_holding(Pools([replica("a"), replica("b")]), "r", ["B"]) == ThinPool("b", "vg", "tp")
    assert ThinPool("b", "my-vg", "tp").dm("tp") == "my--vg-tp"
    with pytest.raises(NoAnswer, match="does not name"):
        thin_pool_holding(Pools([replica("a")], props={}), "r", ["a"])
