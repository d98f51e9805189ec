"""HA heartbeats between hypervisors (vSphere HA's failure and isolation detection).

workload.py  Heartbeats, and its agent: python -m vclab.workloads.heartbeats.workload
model.py     pure: the HA timers and decisions
adapter.py   an experiment's heartbeats entry -> Heartbeats, and what the store keeps
"""
