"""The one base class of expected failures: the CLI prints their one-line message and exits."""
from __future__ import annotations


class PipelineError(RuntimeError):
    """A failure the user can act on (bad input, missing upstream output, unreachable site).

    Its message is one line naming what is wrong; `exit_code` is the CLI's exit status.
    """

    exit_code = 1
