import sys

from losstrace.cli import main

sys.exit(main())
