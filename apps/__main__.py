import sys

from deepsci.apps.cli import main

sys.exit(main())
