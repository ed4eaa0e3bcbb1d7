"""The bad-input corpus of issue 11: suites, the command line, databases, caches, app data."""
