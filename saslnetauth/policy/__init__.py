"""The pure policy core: who may log in from where, and the one decision engine."""
