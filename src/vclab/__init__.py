"""vclab: a packet-level testbed that measures failover time in virtualized clusters."""

__version__ = "0.1.0"

# Every kernel object and OVS bridge vclab creates carries this prefix, so `vclab clean`
# can remove its own leftovers and never touch anybody else's.
PREFIX = "vc"
