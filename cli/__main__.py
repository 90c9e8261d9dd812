import sys

from promptrec.cli.main import main

sys.exit(main())
