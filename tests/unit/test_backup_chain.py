"""A backup's identity (backup_chain.ChainLink) and the digests that carry it."""
import io

from linstor_un.backup_chain import CLOCK_SKEW, ChainLink, DigestStore
from linstor_un.report import Report


def test_a_link_round_trips_and_rejects_garbage():
    link = ChainLink("0123456789abcdef", 1_800_000_000, 905)
    assert ChainLink.decode(link.encode()) == link
    assert ChainLink.decode(ChainLink("0123456789abcdef", 5, None).encode()).chain is None
    for bad in (None, "", "x 1 2", "0123456789abcdef one 2", "0123456789abcdef 1 2 3", "0123456789ABCDEF 1 -"):
        assert ChainLink.decode(bad) is None, bad


def test_a_link_continues_only_the_chain_oned_recorded_after_it():
    link = ChainLink("0123456789abcdef", 1_800_000_000, 905)
    assert link.continues(905, 1_800_000_060) is None                       # recorded a minute later
    assert "image 905" in link.continues(906, 1_800_000_060)                # another chain's image
    assert "taken after" in link.continues(905, 1_800_000_000 - CLOCK_SKEW - 1)   # recorded before it was taken
    assert "long before" in link.continues(905, 1_800_000_000 + 8 * 86400)
    assert link.continues(None, 1_800_000_060) is not None
    first = ChainLink("0123456789abcdef", 1_800_000_000, None)               # a chain's full backup
    assert first.continues(905, 1_800_000_030) is None


def test_digests_are_given_only_to_the_snapshot_they_were_read_from(tmp_path):
    store = DigestStore(tmp_path / "vm-7-1")
    report = Report("test", (7, 0, 0), stream=io.StringIO())
    store.save(0, 3, b"\x01" * 32, "0123456789abcdef", report)
    assert store.load(0, 3, "0123456789abcdef") == b"\x01" * 32
    assert store.load(0, 3, "fedcba9876543210") == b""           # another chain's number 3
    assert store.load(0, 3, None) == b"" and store.load(0, 2, "0123456789abcdef") == b""
    (tmp_path / "vm-7-1" / "disk.0.3.digests").write_bytes(b"\x01" * 32)   # an older linstor_un's file
    assert store.load(0, 3, "0123456789abcdef") == b""
