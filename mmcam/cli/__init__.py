"""The ``mmcam`` command: one subcommand per task, each in its own module. The parser is built from
torch-free names (``choices``); a command imports the heavy modules when it runs, so --help is fast."""

from __future__ import annotations

import argparse
import sys

from mmcam import __version__
from mmcam.cli import bench, caption, classify, demo, dissect, eval, rl, vqa
from mmcam.cli.allocator import keep_freed_memory
from mmcam.cli.choices import METHODS

COMMANDS = (demo, classify, caption, vqa, rl, dissect, bench, eval)
RL_EXTRA = ("gymnasium", "stable_baselines3", "ale_py", "cv2")  # what pip install "mmcam[rl]" brings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmcam",
        description="Explain what vision and vision-language models look at, with Grad-CAM and its variants.",
        epilog=f"methods: {', '.join(METHODS)}. Run 'mmcam COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mmcam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors print one line (no traceback) and exit non-zero. The process keeps
    the memory each batch frees for the next (``allocator``)."""
    arguments = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return arguments.run(arguments) or 0
    except (ValueError, TypeError, OSError) as error:
        print(f"mmcam: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        extra = ' (pip install "mmcam[rl]")' if error.name in RL_EXTRA else ""
        print(
            f"mmcam: error: this needs the package {error.name}, which is not installed{extra}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("mmcam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
