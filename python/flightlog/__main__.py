import sys

from flightlog.cli import main

sys.exit(main())
