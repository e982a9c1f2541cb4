"""`python -m zsseg ...` is the `zsseg` command."""

import sys

from .console import main

sys.exit(main())
