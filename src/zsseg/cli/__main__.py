"""`python -m zsseg.cli`: the command line (the `zsseg` command's entry point, `zsseg.console`)."""

import sys

from ..console import main

sys.exit(main())
