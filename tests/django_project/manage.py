#!/usr/bin/env python
"""manage.py of the minimal Django project the gateway tests run against."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
