"""The contract layer: vocabulary, constants and the typed interface every implementation meets.

Everything above this package (the reference model, the fast model, the invariant checkers, the
state machines and the CLI) depends on it; it depends on nothing but the standard library and
attrs.  The prose documents beside these modules (``specs/*.md``) are the normative text; these
modules are the same contract in a form the type checker can hold an implementation to.
"""
