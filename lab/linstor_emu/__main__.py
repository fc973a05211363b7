"""Run the emulated LINSTOR controller: python -m lab.linstor_emu CONFIG.json"""
import json
import signal
import sys

from .server import Emulator


def main() -> None:
    config = json.load(open(sys.argv[1]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Emulator(config).serve()


if __name__ == "__main__":
    main()
