"""Rigs the tests (and bench/probe_accuracy.py) build with, kept out of the product.

netns.py   namespaces on one OVS bridge (`rig`), OpenFlow/MTU black holes, a switch-stall watch
egress.py  strace output -> every packet a run sent and from which namespace
demo.py    a results store filled with synthetic data (python -m rigs.demo, from tests/)
"""
