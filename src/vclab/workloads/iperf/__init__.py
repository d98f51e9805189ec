"""iperf3 between two hosts: throughput, and its dip during a fault.

workload.py  Iperf3 (server and client, JSON parse)
adapter.py   an experiment's iperf3 entry -> Iperf3, and what the store keeps
"""
