"""`cure`: the command line (options.py: the parser and its checks; commands.py: one handler per command;
entry.py: running one, printing its JSON). With --json, one JSON object on stdout; progress always on stderr."""
from .entry import main, run
from .options import build_parser, check_args

__all__ = ["build_parser", "check_args", "main", "run"]
