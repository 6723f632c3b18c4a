"""Seeding, metrics, reports and safe I/O shared by every script."""
import sys


class UserError(Exception):
    """A problem with the user's input (file, flag, checkpoint): reported in one paragraph, exit 2."""


def run_cli(main, argv=None):
    """Run a script's main(argv); a UserError becomes one paragraph on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
