"""iSCSI storage traffic: tgtd on the array, a multipath initiator per hypervisor.

libiscsi.py  libiscsi through ctypes, and one session on one path
agent.py     the initiator: python -m vclab.workloads.iscsi.agent
target.py    tgtd and its LUNs
workload.py  Iscsi (start/stop the initiator, collect, parse)
adapter.py   an experiment's iscsi entry -> target + initiators, and what the store keeps
"""
