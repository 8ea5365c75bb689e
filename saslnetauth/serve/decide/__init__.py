"""Deciding logins off the event loop: scheduler, fair queue, classifier, workers."""
