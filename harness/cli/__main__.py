"""`python -m fedleak.harness.cli`."""
import sys

from fedleak.harness.cli.main import main

sys.exit(main())
