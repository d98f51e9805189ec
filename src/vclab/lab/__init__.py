"""The runtime layer: a BuildPlan made real, and everything that runs on it. The only Mininet
importer.

lab.py        Lab: preflight, build, convergence, checks, VM moves, teardown
nodes.py      Mininet node classes that track every process by PID
procs.py      ProcessTracker: PIDs with start times, recorded on disk for `vclab clean`
clean.py      remove what a lab (or a killed one) left behind, by name prefix and PID
placement.py  cluster mode: which server holds what, VXLAN tunnels, ssh commands
ioctl.py      interface up/down without a process start
__main__.py   python -m vclab.lab FILE: build, check, tear down
"""
