"""``python -m vmconform``."""

from vmconform.cli import main

main()
