"""Hypothesis state machines that judge an implementation, one per subsystem.

Two modes: *lockstep* drives the implementation and the reference model with the same steps
and compares every result and view; *contract* drives the implementation alone and judges it by
the invariants and operation rules, for allocators with another placement policy.
"""
