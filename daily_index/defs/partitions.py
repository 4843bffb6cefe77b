"""The one partitioning of the project: a UTC day, from a fixed first day.

`end_offset=1` makes today's partition exist, so the 12:00 UTC schedule can materialise
the day it runs on.
"""

import dagster as dg

FIRST_DAY = "2024-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)
