"""Settings for the whole suite."""

import os

# gRPC's fork handlers misbehave in children forked (not exec'd at once) from a process that has
# gRPC loaded, as the backends' setns-then-exec helper does; the services set the same (cli/main).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
