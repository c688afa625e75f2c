"""User-facing errors.

Every problem a user can cause (a malformed file, a wrong model id, mismatched
tokenizers, an empty fact set, an oversized request) is raised as a
``LabError``.  The CLI prints its message on one line and exits 2; the UI shows
it in the page.  Anything else is a bug and keeps its traceback.
"""


class LabError(Exception):
    """An error whose message is meant for the user, not a developer."""
