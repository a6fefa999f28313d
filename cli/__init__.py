"""The `igldt` command line."""
