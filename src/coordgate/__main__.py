import sys

from coordgate.cli import main

sys.exit(main())
