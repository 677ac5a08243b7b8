import sys

from ncsn_fast.cli.main import main

sys.exit(main())
