"""The CLI's exit codes, in one place (README: "Exit codes").

0 ok (for `explain`: allowed), 1 blocked or failed, 2 bad usage or input, 3 brain unreachable,
4 not authenticated or not permitted, 5 not found. argparse's own usage errors exit 2 as well.
Every command maps a failure to a code here, never with a literal of its own.
"""

from __future__ import annotations

import grpc

OK = 0
BLOCKED = 1  # `explain`: the connection is blocked; `lint`: a policy is rejected
FAILED = 1
USAGE = 2  # a bad flag or value, a malformed or missing input file
UNREACHABLE = 3
DENIED = 4  # not authenticated, or not permitted
NOT_FOUND = 5

# What the brain's status codes mean to the operator; any other status is FAILED.
GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.UNAVAILABLE: UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNREACHABLE,
    grpc.StatusCode.UNAUTHENTICATED: DENIED,
    grpc.StatusCode.PERMISSION_DENIED: DENIED,
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: USAGE,
    grpc.StatusCode.OUT_OF_RANGE: USAGE,
}


def for_status(code: grpc.StatusCode) -> int:
    return GRPC.get(code, FAILED)


class CliError(Exception):
    """A failure the operator is told about in one line (no traceback), with its exit code."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code
