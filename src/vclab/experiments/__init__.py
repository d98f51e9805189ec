"""vclab.experiments"""
