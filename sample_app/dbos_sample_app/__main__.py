import sys

from dbos_sample_app.service import main

sys.exit(main())
