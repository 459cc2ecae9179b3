"""python -m tvmlat.cli: the same as the tvmlat command."""

from . import main

main()
