"""The probe: ms-resolution UDP between two endpoints, vclab's measuring stick.

workload.py  Probe (start/stop the two agents, collect, parse)
agent.py     the agent in each namespace: python -m vclab.workloads.probe.agent
metrics.py   pure: outages, loss, floors from the two logs
adapter.py   an experiment's probe entry -> Probe, and what the store keeps
"""
