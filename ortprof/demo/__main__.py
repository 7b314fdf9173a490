import sys

from .workload import main

sys.exit(main())
