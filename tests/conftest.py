"""Session fixtures: real OpenSSH servers (tests/harness) shared by the integration tests."""
from tests.harness.fixtures import *  # noqa: F401,F403
