"""Downloads kept on the front-end between DS stat and DS cp, so an image is fetched once.

oned runs `stat` before `cp`. For a compressed raw image over http(s) the size the volume needs
is only known after decompressing all of it; `stat` keeps what it downloaded (as downloaded:
compressed, so MD5/SHA1 are checked on the same bytes) and `cp` reads it from here instead of
the network. An entry is used for at most MAX_AGE seconds and only for the very same URL; `cp`
removes it once the image is in LINSTOR; entries older than MAX_AGE go at the next `stat`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Optional

MAX_AGE = 3600


def cache_dir() -> Path:
    return Path(os.environ.get("LINSTOR_UN_DOWNLOADS") or "/var/tmp/linstor_un-downloads")


def _entry(url: str) -> Path:
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:40]


def lookup(url: str) -> Optional[Path]:
    """The kept download of exactly this URL, if fresh."""
    data = _entry(url)
    try:
        meta = json.loads(data.with_suffix(".json").read_text())
        fresh = time.time() - data.stat().st_mtime < MAX_AGE
    except (OSError, ValueError):
        return None
    return data if fresh and meta.get("url") == url else None


class Keeper:
    """Writes a download beside its use; `done()` makes it visible to `lookup`, otherwise it goes."""

    def __init__(self, url: str):
        self.url = url
        prune()
        cache_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, self._part = tempfile.mkstemp(dir=cache_dir(), prefix=".part-")
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def done(self) -> None:
        self.file.close()
        target = _entry(self.url)
        os.replace(self._part, target)
        target.with_suffix(".json").write_text(json.dumps({"url": self.url}))

    def discard(self) -> None:
        self.file.close()
        try:
            os.unlink(self._part)
        except OSError:
            pass


def forget(url: str) -> None:
    data = _entry(url)
    for p in (data, data.with_suffix(".json")):
        try:
            p.unlink()
        except OSError:
            pass


def prune() -> None:
    try:
        entries = list(cache_dir().iterdir())
    except OSError:
        return
    now = time.time()
    for p in entries:
        try:
            if now - p.stat().st_mtime >= MAX_AGE:
                p.unlink()
        except OSError:
            pass
