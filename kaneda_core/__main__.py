"""``python -m kaneda_core`` runs the ``kaneda`` command."""

import sys

from .cli import main

sys.exit(main())
