"""vclab.fabric"""
