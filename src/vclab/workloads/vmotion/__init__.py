"""vMotion: a migration's traffic replayed, and the VM's real switch-over.

model.py      pure: pre-copy rounds, stop-and-copy, downtime
workload.py   VmotionReplay, and its agent: python -m vclab.workloads.vmotion.workload
migration.py  LiveMigration on a built lab (replay + switch-over + probe + capture)
adapter.py    an experiment's vmotion entry -> a migration in a thread, and what the store keeps
"""
