"""``python -m mmcam`` and the ``mmcam`` command: Ctrl-C at any moment, also while the heavy modules
(torch) are still loading, ends with one line, "mmcam: interrupted", exit status 130 and no traceback."""

import os
import signal
import sys

INTERRUPTED = "mmcam: interrupted"


def on_interrupt(signum: int, frame) -> None:
    """SIGINT: KeyboardInterrupt, which the command catches and reports; but in the middle of importing a
    module, where a library may swallow it (the command then runs to the end) or be left half-initialized,
    the same line and an immediate exit (the commands import their modules before they work, so there is
    nothing to clean up)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            print(INTERRUPTED, file=sys.stderr, flush=True)
            os._exit(130)
        frame = frame.f_back
    raise KeyboardInterrupt


def run() -> int:
    signal.signal(signal.SIGINT, on_interrupt)
    try:
        from mmcam.cli import main

        return main()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
