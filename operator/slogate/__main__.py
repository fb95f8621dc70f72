import sys

from slogate.cli import main

sys.exit(main())
