"""The reference model of Linux 4.6's VM subsystem: simple, obviously correct, stdlib + attrs.

Read it beside ``specs/*.md``: every function names the 4.6 function it models, and every
place the model deliberately does less than the kernel says so with ``[Simplified: …]``.
"""
