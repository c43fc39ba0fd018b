"""``python -m timm_u1.cli``: the ``timm-u1`` command."""
import sys

from . import main

sys.exit(main())
