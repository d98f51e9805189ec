"""Shared-datastore locking over iSCSI: heartbeats, VM file locks, stale-lock takeover and the
no-split-brain rule (model.py), the on-disk format (layout.py), the per-host agent (agent.py),
the dual-writer checker (checker.py) and the workload with its experiments (workload.py)."""
