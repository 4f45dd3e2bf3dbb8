import sys

from bench.serving.run import main

sys.exit(main())
