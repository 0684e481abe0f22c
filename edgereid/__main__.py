import sys

from edgereid.cli import main

sys.exit(main())
