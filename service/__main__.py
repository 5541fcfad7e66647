"""``python -m service`` is the ``touchstream`` command."""

from service.cli import main

main()
