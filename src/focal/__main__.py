import sys

from focal.cli import main

sys.exit(main())
