"""Scheduler events of the process in the window, joined with its run() spans (issue: why was this run slow)."""
