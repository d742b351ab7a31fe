"""``python -m mmcam`` and the ``mmcam`` command: Ctrl-C at any moment, also while the heavy modules
(torch) are still loading, ends with one line, "mmcam: interrupted", and no traceback."""

import sys


def run() -> int:
    try:
        from mmcam.cli import main

        return main()
    except KeyboardInterrupt:
        print("mmcam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
