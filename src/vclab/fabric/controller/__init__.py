"""vclab's SDN controller for the physical fabric switches (OpenFlow 1.3, os-ken).

model.py  the input file the build writes (switches, cabling, servers, networks)
core.py   pure: paths, fast-failover groups, flood tree, DSCP/meters -> OpenFlow messages
trace.py  pure: an in-memory packet tracer that checks core's messages
app.py    the thin os-ken app; __main__.py runs it: python -m vclab.fabric.controller --help
"""
