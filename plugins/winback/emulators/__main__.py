"""Run one platform emulator in the foreground until interrupted.

    python -m winback.emulators meta_custom_audiences --port 8900 --token test-token
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from winback.emulators import EMULATORS, emulator_class
from winback.emulators.base import Faults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m winback.emulators", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(EMULATORS))
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--token", default="test-token", help="the credential it accepts")
    parser.add_argument("--throttle-every", type=int, default=0, help="answer every n-th call 429")
    parser.add_argument("--fail-every", type=int, default=0, help="answer every n-th call 500")
    args = parser.parse_args(argv)
    emulator = emulator_class(args.kind)(token=args.token, faults=Faults(args.throttle_every, args.fail_every))
    emulator.start(args.port)
    print(emulator.base_url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
