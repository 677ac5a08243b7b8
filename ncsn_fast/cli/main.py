"""`ncsn-fast` and `python -m ncsn_fast.cli`: the parser and the dispatch to the command modules.

Commands import their libraries (torch, torchvision, Triton) only when they run, so ``--help`` answers at once.
Every error a user can cause is one line on stderr and exit code 2, found before any long work; a diverging run
exits 1 naming where; Ctrl-C exits 130 saying what was kept.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ncsn_fast.cli import bench, configure, convert, doctor, evaluate, likelihood, sample, train, tune
from ncsn_fast.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CommandError, to_flag

COMMANDS = (sample, configure, train, evaluate, likelihood, convert, bench, doctor, tune)


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print versions (ncsn-fast, torch, CUDA) and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        import torch

        from ncsn_fast import __version__

        cuda = torch.version.cuda or "none"
        print(f"ncsn-fast {__version__} (torch {torch.__version__}, CUDA {cuda}, Python {sys.version.split()[0]})")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line too (no usage block), with the same prefix and exit code 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"ncsn-fast: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ncsn-fast", description="NCSN / NCSNv2 score-based generative models")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return p


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ncsn-fast: warning: {str(message).splitlines()[0]}", file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a parse error (2, already printed): return the code, as a function
        return int(exc.code or 0)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warnings
    try:
        return args.run(args)
    except KeyboardInterrupt as exc:  # its text, when it has one, says what was written before it was raised
        kept = str(exc) or getattr(args, "kept", None) or "nothing written"
        print(f"ncsn-fast: interrupted; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, ValueError, FileNotFoundError, ImportError) as exc:
        message = to_flag(_first_line(exc), vars(args), getattr(args, "flag_names", None))
        print(f"ncsn-fast: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except (FloatingPointError, OSError) as exc:
        print(f"ncsn-fast: error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
