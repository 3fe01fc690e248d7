"""Shared fixtures: real databases (tests/fixtures_db.py) and real brokers (tests/fixtures_mqtt.py)."""

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_mqtt"]
