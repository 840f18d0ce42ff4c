import sys

from bitcl.cli import main

sys.exit(main())
