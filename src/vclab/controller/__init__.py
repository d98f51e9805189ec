"""vclab.controller"""
