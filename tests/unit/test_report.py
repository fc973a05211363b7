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
