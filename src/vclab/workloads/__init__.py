"""Traffic generators. Each follows one contract (see base.py): check, start, stop, collect, parse."""
