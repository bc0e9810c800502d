"""Runnable examples from the docs; CI runs each one."""
