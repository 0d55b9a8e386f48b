"""A helper module with a syntax error (imported by helper_syntax_error.py)."""


def banner() -> str  # <- error
    return "managed by converge\n"
