"""Settings for the whole suite."""

import os

from hypothesis import HealthCheck, settings

# gRPC's fork handlers misbehave in children forked (not exec'd at once) from a process that has
# gRPC loaded, as the backends' setns-then-exec helper does; the services set the same (cli/main).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# Hypothesis judges time too: an example over its deadline (200 ms by default) that is quicker
# when replayed fails the test as "Flaky", and slow data generation fails a health check. Both
# measure how busy the machine is, not the code: off for the whole suite (what a test computes
# is asserted; how fast is for benchmarks/).
settings.register_profile("stockade", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("stockade")
