"""``python -m edge_aigc`` is the same as the ``edge-aigc`` command."""
import sys

from .cli import main

sys.exit(main())
