"""`python -m cli` = the predmesh console script."""
import sys

from cli.main import main

sys.exit(main())
