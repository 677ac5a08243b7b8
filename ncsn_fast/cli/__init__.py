"""The command line, the library's one face: ``ncsn-fast COMMAND …`` or ``python -m ncsn_fast.cli COMMAND …``.

``main.py`` builds the parser; one module per command group (sample, configure, train, evaluate, bench) maps
flags to the library's typed functions and reports; ``common.py`` holds what they share.
"""

from ncsn_fast.cli.main import main

__all__ = ["main"]
