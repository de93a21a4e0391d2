"""User-facing errors.

A `HeptaError` carries one sentence that names the problem and the fix; the CLI prints it
without a traceback. Broken internal invariants stay `assert`s.
"""


class HeptaError(Exception):
    """A problem the user can fix (bad input, missing file, wrong option)."""
