"""``python -m mlops_demo.airflow_stack up ...`` (see ``command_line``)."""

import sys

from mlops_demo.airflow_stack.command_line import main

sys.exit(main())
