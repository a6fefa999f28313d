"""The test suite, a package so that its folders can mirror igldt's (tests/train/ for igldt.train, ...)
and hold modules of the same name; shared fixtures in conftest.py, shared helpers in helpers.py."""
