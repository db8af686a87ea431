"""``python -m itool``: what launchers run in each process (``accelerate launch -m itool run …``)."""

from itool.cli import main

main()
