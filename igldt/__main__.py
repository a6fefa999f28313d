"""`python -m igldt ...` runs the `igldt` command."""
from igldt.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="igldt")
