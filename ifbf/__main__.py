import sys

from ifbf.cli import main

sys.exit(main())
