"""The Empirical API as plain values: every answer parsed in one place, the verdict, the errors.

Nothing here does I/O or imports Airflow. The hook, the probe, the trigger and the tests read
answers only through these modules, so a shape the API changes is changed here once.
"""
