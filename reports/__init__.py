"""Reporting: reach over periods (daily roll-ups of the raw deliveries), exports, public pages."""
