"""`cure`: the command line (options.py: the parser and its checks; commands.py: one handler per command;
main.py: running one, printing its JSON). With --json, one JSON object on stdout; progress always on stderr."""
from .main import main, run
from .options import build_parser, check_args

__all__ = ["build_parser", "check_args", "main", "run"]
