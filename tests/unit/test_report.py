"""The one formatter of a failed command's stderr (report.meaningful)."""
from linstor_un.report import LINE_LIMIT, meaningful

MKFS_XFS = b"""Filesystem must be larger than 300MB.
Usage: mkfs.xfs
/* blocksize */\t\t[-b size=num]
/* metadata */\t\t[-m crc=0|1,finobt=0|1,uuid=xxx,rmapbt=0|1,reflink=0|1,
""" + b"/* naming */\t\t[-n size=num,version=2|ci,ftype=0|1]\n" * 40 + b"<value> is xxx (512 byte blocks).\n"


def test_the_reason_before_a_usage_text_is_kept():
    msg = meaningful(MKFS_XFS)
    assert msg.startswith("Filesystem must be larger than 300MB.")
    assert msg.endswith("<value> is xxx (512 byte blocks).")
    assert "naming" not in msg


def test_one_line_one_reason():
    assert meaningful(b"dd: error writing '/dev/x': No space left on device\n") == \
        "dd: error writing '/dev/x': No space left on device"
    assert meaningful(b"") == "(no error output)"
    assert meaningful(b"\n  \n") == "(no error output)"


def test_without_an_error_word_the_first_and_last_lines():
    assert meaningful(b"starting\nstep 2\nhalted\n") == "starting ... halted"


def test_long_lines_are_cut_and_bad_bytes_do_not_break_it():
    msg = meaningful(b"error: " + b"x" * 5000 + b"\xff\n")
    assert len(msg) <= LINE_LIMIT + 3 and msg.startswith("error: xxx")


# ---- the report's form per OpenNebula version (reference/opennebula-interface.md) -------------------
import io  # noqa: E402

import pytest  # noqa: E402

from linstor_un.report import Report  # noqa: E402


@pytest.mark.parametrize("version,info,fail", [
    ((5, 12, 0), "INFO: clone: copied\n",
     "ERROR: clone: no room\nERROR MESSAGE --8<------\nno room\nERROR MESSAGE ------>8--\n"),
    ((6, 4, 0), "", "no room\n"),                  # 6.0.3-6.x: stderr is the message: no log lines
    ((7, 4, 0), "INFO: 5 clone: copied\n", "no room\n"),
])
def test_log_lines_and_the_failure_in_each_versions_form(version, info, fail):
    out = io.StringIO()
    report = Report("clone", version, object_id=5, stream=out)
    report.info("copied")
    assert out.getvalue() == info
    out.truncate(0), out.seek(0)
    report.fail("no\nroom")
    assert out.getvalue() == fail


def test_on_6_0_3_to_6_10_what_could_not_be_undone_is_in_the_final_line():
    """oned 6.0.3-6.10 keeps stderr only as the reason of a failure: a step the rollback could not
    undo (a leftover volume) is said there, not lost with the log lines."""
    out = io.StringIO()
    report = Report("clone", (6, 10, 0), object_id=5, stream=out)
    report.info("copied")
    report.error("rollback step failed (delete one-vm-5-disk-0): LINSTOR unreachable")
    report.fail("no room")
    assert out.getvalue() == "no room (rollback step failed (delete one-vm-5-disk-0): LINSTOR unreachable)\n"
