"""The lab: a real multi-node cluster made of Linux network namespaces on one machine.

Modules, each with one job:

* `config` — state dir, name prefix, loopback ports (overridable by environment, for tests)
* `manifests`, `objects` — the cluster files in; the Node and running Pod objects the API serves
* `topology` — the network plan, a pure function of the node count and the pods
* `netcmds` — the plan as `ip -batch` scripts (pure); `netio`, `nsenter` — carrying them out
* `labd` — one daemon serving every pod's ports (`podserver`) and relaying agents to the brain
  (`relay`); `probe` — connectivity from every source namespace, concurrently, from one process
* `state`, `procs` — the state file, and the processes the lab starts and stops
* `control` — the control plane's command lines (API server, Redis, brain, agents), in one place
* `lab` — the commands (up, apply, delete, pods, probe, down), `demo` — the Sock Shop walk-through
* `apiserver/` — a small Kubernetes API server (REST and watch) for the lab and tests
"""
