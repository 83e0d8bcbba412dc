"""``python -m gateway_client.worker``: see :mod:`gateway_client.worker.cli`."""

import sys

from gateway_client.worker.cli import main

sys.exit(main())
