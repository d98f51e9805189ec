"""vclab.topology"""
