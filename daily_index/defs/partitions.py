"""The one partitioning of the project: a UTC day, from a fixed first day.

`end_offset=1` makes today's partition exist, so the 12:00 UTC schedule can materialise
the day it runs on. The first day leaves room for years of imported history (an import or a
backfill of five years and more lands in partitions that exist); a day before it cannot be
stored, and `daily-index import` says so.
"""

import dagster as dg

FIRST_DAY = "2019-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)
