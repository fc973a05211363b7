"""Run the emulated LINSTOR controller: python -m lab.linstor_emu CONFIG.json"""
import gc
import json
import signal
import sys

from .server import Emulator


def main() -> None:
    config = json.load(open(sys.argv[1]))
    # listings of thousands of resources allocate millions of small acyclic objects: collect
    # cycles rarely, or the collector's passes dominate the answer time (a lab artefact)
    gc.set_threshold(200_000, 50, 100)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Emulator(config).serve()


if __name__ == "__main__":
    main()
