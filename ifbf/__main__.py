import sys

from ifbf.commands.cli import main

sys.exit(main())
