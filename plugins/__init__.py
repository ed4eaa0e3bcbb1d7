"""kdbench's built-in method plugins (installed as ``kdbench_plugins``).

Each module is a complete plugin registered through the ``kdbench`` entry-point group in
``pyproject.toml``, exactly as a third-party package would be: copy one to start a new method.
"""
