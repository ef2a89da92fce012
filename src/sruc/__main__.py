"""``python -m sruc``: the same as the ``sruc`` command."""

from __future__ import annotations

import sys

from sruc.cli import main

sys.exit(main())
