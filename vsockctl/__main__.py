"""``python -m vsockctl``."""

from vsockctl.cli import main

main()
