"""`python -m finetune_advisor …`: the same command line as `finetune-advisor …`."""

import sys

from .pipeline.cli import main

sys.exit(main())
