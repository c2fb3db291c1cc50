"""The running kernel as an oracle: the same system-call sequences on the host and on a model.

``host`` runs a sequence in a forked child inside a fixed address window and reads back each
result and the window's ``/proc/self/maps``; ``generate`` draws sequences restricted to
behaviour that has not changed since 4.6; ``compare`` runs the model, masks the known
4.6-vs-host differences (``specs/vma_oracle.md``) and reports the first divergence; ``runner``
is the long-run entry point behind ``vmconform oracle vma``.
"""
