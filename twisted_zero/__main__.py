"""
C{python -m twisted_zero}: the C{twisted-zero} command.
"""

import sys

from ._cli import main

sys.exit(main())
