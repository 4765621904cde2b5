"""The command line, the only package that sees argparse: the parser (`cli`) and one handler per command."""
from .cli import build_parser, main
