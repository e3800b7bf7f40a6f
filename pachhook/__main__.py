"""`python -m pachhook`."""

from pachhook.cli import main

main()
