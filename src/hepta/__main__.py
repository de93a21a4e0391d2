import sys

from hepta.cli import main

sys.exit(main())
