import sys

from dbos_reconciler.service import main

sys.exit(main())
