"""vclab.results"""
