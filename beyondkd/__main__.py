"""``python -m beyondkd`` runs the CLI."""

import sys

from beyondkd.cli.main import main

sys.exit(main())
