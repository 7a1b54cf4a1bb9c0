"""The ``harmonize`` command line: a thin face over the library (parse, call one function, print)."""
